// The backend interface: the compute of one forward pass over a ragged batch, on one device, with the
// KV cache pools the backend owns. The engine talks to this interface only; cpu/ is the fp32
// reference (OpenMP) and cuda/ the GPU implementation.
//
// Batch metadata are flat host arrays (ForwardBatch) so that a GPU backend can copy them to the device
// in a few transfers and capture decode steps in CUDA graphs. Block ids index the backend's KV pools;
// the engine's block manager decides them, the backend never allocates blocks itself.
//
// Thread-safety: a Backend is driven by one thread (the engine loop). read_kv_block/write_kv_block
// may be called from the transfer layer's thread only between forward() calls of that loop, unless
// an implementation documents otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/device_sampling.h"
#include "common/status.h"
#include "model/config.h"
#include "model/tensor.h"
#include "model/weight_source.h"

namespace tandem::backend {

// Geometry of the paged KV cache. Per layer one pool
//   [num_blocks, 2 (K then V), block_size, num_kv_heads, head_dim]
// so one block of one layer (its K and V) is one contiguous run of block_bytes() (DESIGN.md §4).
//
// dtype is the KV cache dtype (--kv-cache-dtype): kF32 (the CPU's default), kBF16 (CUDA's default) or
// kF8E4M3. An FP8 block carries its own scales after its values, so a block is still one self-contained
// run of bytes that block copies and KV transfers move as they are:
//   [K e4m3 [block_size, num_kv_heads, head_dim] | V e4m3 (same) | K scales fp32 [block_size, num_kv_heads] |
//    V scales fp32 (same) | padding to 16 bytes]
// One scale per (token, KV head), computed when the KV is written: scale = amax over head_dim / 448 (1 for an
// all-zero row), value = e4m3(x / scale) rounded to nearest even, saturating; read back as value * scale
// (docs/quantization.md says why this granularity).
struct KvCacheSpec {
  int num_layers = 0;
  int num_blocks = 0;
  int block_size = 16;
  int num_kv_heads = 0;
  int head_dim = 0;
  model::DType dtype = model::DType::kF32;

  // K and V values of one block (not its scales).
  size_t block_elements() const { return 2ull * block_size * num_kv_heads * head_dim; }
  // fp32 scales of one block: 2 * block_size * num_kv_heads for FP8, else 0.
  size_t block_scales() const { return dtype == model::DType::kF8E4M3 ? 2ull * block_size * num_kv_heads : 0; }
  // Where the scales start within a block (the values' bytes).
  size_t scales_offset_bytes() const { return block_elements() * model::dtype_size(dtype); }
  // FP8 blocks are padded to a multiple of 16 bytes (none at block_size 16), which the device copies and the
  // kernels' vector loads rely on.
  size_t block_bytes() const {
    const size_t bytes = scales_offset_bytes() + block_scales() * sizeof(float);
    return block_scales() > 0 ? (bytes + 15) / 16 * 16 : bytes;
  }
};

// The KV dtype as --kv-cache-dtype and logs spell it: "fp32", "bf16", "fp8" ("?" for anything else).
std::string kv_dtype_name(model::DType dtype);
// What --kv-cache-dtype (`flag`: "auto", "bf16" or "fp8") means on `device` ("cpu" or "cuda:N"): auto is
// fp32 on the CPU and bf16 on CUDA. Throws tandem::Error naming the flag for anything else.
model::DType resolve_kv_cache_dtype(const std::string& flag, const std::string& device);

// One step's input: the new tokens of every sequence in the batch, sequence after sequence.
// For sequence s, its new tokens are token_ids[query_starts[s] .. query_starts[s+1]) at consecutive
// positions ending at context_lens[s] - 1; tokens at positions below that are already in its blocks
// (prefix-cached or computed by earlier steps). A prefill chunk and a decode token look the same.
struct ForwardBatch {
  std::span<const int32_t> token_ids;     // [num_tokens]
  std::span<const int32_t> positions;     // [num_tokens] absolute position of each new token
  std::span<const int32_t> query_starts;  // [num_seqs + 1] offsets into token_ids
  std::span<const int32_t> context_lens;  // [num_seqs] tokens in the KV cache after this step
  std::span<const int32_t> block_tables;  // [num_seqs, max_blocks_per_seq] block ids; unused slots -1
  int max_blocks_per_seq = 0;
  std::span<const int32_t> logits_indices;  // [num_logits] indices into token_ids to compute logits for

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_seqs() const { return static_cast<int>(context_lens.size()); }
  int num_logits() const { return static_cast<int>(logits_indices.size()); }
};

// Checks the batch's shapes and invariants against the cache geometry; InvalidArgument naming the
// first broken one. Backends call it before launching anything.
Status validate_batch(const ForwardBatch& batch, const KvCacheSpec& kv, int vocab_size);

// This backend's KV pools as another process on the same host can map them (CUDA IPC): what the decode
// worker sends a prefill worker once, so the prefill worker can write KV straight into its blocks.
// Valid while the exporting backend lives. The transfer layer serializes it; the backend only makes and
// consumes it.
struct KvExport {
  std::string device;        // "cuda:0" of the exporting process
  int device_ordinal = -1;
  std::string pci_bus_id;    // e.g. "0000:19:00.0": names the GPU whatever the peer's CUDA_VISIBLE_DEVICES
  int64_t process_id = 0;    // exporter's pid (a handle cannot be opened in the process that made it)
  KvCacheSpec spec;          // geometry of the exporter's pools (num_blocks: blocks usable by the engine)
  size_t layer_stride_bytes = 0;  // bytes from one layer's pool to the next in the exported allocation
  std::vector<std::byte> handle;  // opaque: cudaIpcMemHandle_t of the allocation holding every layer's pool
};

// One-line text form of a KvExport (no spaces, commas or semicolons inside fields), for addresses and
// messages; decode_kv_export(encode_kv_export(e)) == e. decode: InvalidArgument naming what is malformed.
std::string encode_kv_export(const KvExport& e);
StatusOr<KvExport> decode_kv_export(const std::string& text);

// One block of one layer of a backend's KV pools.
struct KvBlockRef {
  int32_t layer = 0;
  int32_t block = 0;
};

// A point-to-point link (NCCL, two ranks) between this backend's KV pools and one peer process's, for
// workers that cannot map each other's GPU memory. The i-th block one side sends lands in the i-th block
// the other receives. Each call returns once its blocks are done on this side, or DeadlineExceeded past
// timeout_ms, after which the link is broken and every call fails. InvalidArgument for a block out of
// range. Thread-safety: any thread, one call at a time per link; its copies run on the backend's peer
// stream, beside forward() (as copy_blocks_to_peer's do).
class KvLink {
 public:
  virtual ~KvLink() = default;
  virtual Status send(std::span<const KvBlockRef> blocks, int timeout_ms) = 0;
  virtual Status recv(std::span<const KvBlockRef> blocks, int timeout_ms) = 0;
};

// A sampled step's rows and where its results go (Backend::forward_sampled).
struct DeviceSamplingStep {
  std::span<const RowSampling> rows;  // [num_logits]
  std::span<const LogitEdit> edits;   // every row's edits, back to back
  std::span<int32_t> tokens;          // [num_logits] out
  std::span<RowLogprobs> logprobs;    // [num_logits] out; row r filled when rows[r].num_logprobs >= 0
  // Constrained rows (RowSampling::mask_row >= 0): [mask rows, ceil(vocab_size / 32)] words, bit t % 32
  // of word t / 32 set = token t may be drawn. Read only when the backend stages the draw, after it has
  // enqueued the forward's kernels, and after calling `await_masks` (when set): the engine may still be
  // computing the masks while the device runs the model. Every backend that samples_on_device() honours them.
  std::span<const uint32_t> masks;
  std::function<void()> await_masks;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const model::ModelConfig& config() const = 0;
  virtual const KvCacheSpec& kv_cache_spec() const = 0;
  // "cpu", "cuda:0"
  virtual std::string device_name() const = 0;

  // Runs the model over `batch`: writes each new token's K/V into its block, and the logits of the
  // rows named by batch.logits_indices into `logits` ([num_logits, vocab_size] fp32, host).
  // Returns InvalidArgument for a malformed batch, Internal for a device failure.
  virtual Status forward(const ForwardBatch& batch, std::span<float> logits) = 0;

  // Greedy fast path: runs the model like forward() but returns, for each row of batch.logits_indices,
  // its argmax token ([num_logits] int32, host; as argmax() below) instead of the logits, so a GPU
  // backend copies 4 bytes per row instead of 4 * vocab_size. The default runs forward() into a
  // reused per-thread buffer and takes the argmax on the host.
  virtual Status forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens);

  // Whether forward_sampled draws on the device. The engine uses it for every step whose rows are each
  // drawn once (not the first token of n > 1 choices); the others go through forward() and the host
  // sampler.
  virtual bool samples_on_device() const { return false; }
  // Like forward_greedy, with row r edited and drawn by step.rows[r] where the logits are; its token in
  // step.tokens[r], its logprobs in step.logprobs[r] when asked. Unsupported unless samples_on_device().
  virtual Status forward_sampled(const ForwardBatch& batch, const DeviceSamplingStep& step) {
    (void)batch, (void)step;
    return Status::Unsupported(device_name() + " does not sample on the device");
  }

  // Non-OK once a failure has left the device unusable: a CUDA error during a step is sticky (every
  // later call on the context fails too), so the engine fails every request it holds instead of
  // failing them one step at a time, and the worker exits for its supervisor to restart it.
  virtual Status device_health() const { return Status::Ok(); }

  // Raw bytes of one block of one layer (K and V, kv_cache_spec().block_bytes()), for moving KV
  // between workers. InvalidArgument for an out-of-range layer/block or a wrong-sized buffer.
  virtual Status read_kv_block(int layer, int block, std::span<std::byte> out) = 0;
  virtual Status write_kv_block(int layer, int block, std::span<const std::byte> in) = 0;

  // Device-to-device KV transfer between processes on one host (CUDA IPC). Unsupported on backends
  // without device memory (the CPU backend); the transfer layer then falls back to read/write_kv_block.
  //
  // export_kv_handles: describes this backend's pools for a peer process.
  virtual StatusOr<KvExport> export_kv_handles() { return Status::Unsupported(device_name() + " cannot export KV pools"); }
  // Whether this backend's device can read and write the exporter's device memory: the same GPU, or
  // one with peer access to it (NVLink/PCIe). Only meaningful for an exporter on the same host.
  virtual bool can_reach_peer(const KvExport& peer) { (void)peer; return false; }
  // Copies, for every layer in [layer_begin, layer_end) (layer_end -1: all), the peer's block
  // peer_blocks[i] into our block local_blocks[i] (from_peer), or ours into the peer's (to_peer), in one
  // batched device copy per call; returns when the copy is complete. The peer's pools are opened on first
  // use and kept open until this backend is destroyed. REQUIRES: peer's geometry (block size, heads,
  // head_dim, dtype, layers) equals ours; the peer does not touch those blocks meanwhile.
  // InvalidArgument for mismatched geometry or block ids out of range; Unavailable when the handle
  // cannot be opened (another host, no peer access): the caller falls back to TCP.
  // Threading as read_kv_block: from the engine thread, or from another thread between forward() calls,
  // unless an implementation documents otherwise (the CUDA backend allows any thread at any time: peer
  // copies run on their own stream under their own lock).
  virtual Status copy_blocks_from_peer(const KvExport& peer, std::span<const int32_t> peer_blocks,
                                       std::span<const int32_t> local_blocks, int layer_begin = 0, int layer_end = -1) {
    (void)peer, (void)peer_blocks, (void)local_blocks, (void)layer_begin, (void)layer_end;
    return Status::Unsupported(device_name() + " cannot copy KV from a peer");
  }
  virtual Status copy_blocks_to_peer(const KvExport& peer, std::span<const int32_t> local_blocks,
                                     std::span<const int32_t> peer_blocks, int layer_begin = 0, int layer_end = -1) {
    (void)peer, (void)peer_blocks, (void)local_blocks, (void)layer_begin, (void)layer_end;
    return Status::Unsupported(device_name() + " cannot copy KV to a peer");
  }

  // KV links (NCCL point-to-point; the transfer layer's --kv-transfer nccl). kv_link_device: this GPU's
  // PCI bus id when links can be opened (NCCL present, the KV pools on one GPU), else "".
  virtual std::string kv_link_device() { return ""; }
  // A fresh link id (an ncclUniqueId in hex) for open_kv_link on both sides.
  virtual StatusOr<std::string> make_kv_link_id() { return Status::Unsupported(device_name() + " has no KV links"); }
  // Joins link `link_id` as `rank` (0 or 1); returns once the peer has joined too, or DeadlineExceeded
  // after timeout_ms.
  virtual StatusOr<std::unique_ptr<KvLink>> open_kv_link(const std::string& link_id, int rank, int timeout_ms) {
    (void)link_id, (void)rank, (void)timeout_ms;
    return Status::Unsupported(device_name() + " has no KV links");
  }
};

// Fault injection for tests of the device-failure path: the forward call number N (1-based, counted
// per backend) fails as a device failure would when TANDEM_INJECT_DEVICE_FAULT_AT_STEP=N is set in the
// environment (the CUDA backend makes a real illegal-address fault); 0 when unset or not a positive
// integer.
int injected_device_fault_step();

// The greedy token of one row of logits: ties go to the lowest id (as torch.argmax), NaN never wins.
int32_t argmax(std::span<const float> logits);

struct BackendOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N" or (tensor parallel) "cuda:N,M,..."
  int block_size = 16;
  // KV blocks to allocate; 0 sizes the pool from memory (kv_cache_bytes on CPU; the GPU's free memory
  // times gpu_memory_utilization on CUDA).
  int num_kv_blocks = 0;
  size_t cpu_kv_cache_bytes = 1ull << 30;
  double gpu_memory_utilization = 0.9;
  int num_threads = 0;  // CPU: OpenMP threads; 0 = all cores
  bool cuda_graphs = true;  // CUDA: replay decode steps (one token per sequence) from captured graphs
  // Ranks the model is split over (--tensor-parallel-size; docs/parallelism.md). CPU: threads of this
  // process; CUDA: one GPU each (parse_cuda_devices), threads of this process over NCCL.
  int tensor_parallel_size = 1;
  // --quantization: "" (as the checkpoint says), "fp8" (online per-channel FP8 unless the checkpoint is
  // FP8 already) or "none" (refused on an FP8 checkpoint). See model/quantization.h.
  std::string quantization;
  // --kv-cache-dtype: "auto", "bf16" or "fp8" (resolve_kv_cache_dtype).
  std::string kv_cache_dtype = "auto";
};

// The GPUs of `--device` for `--tensor-parallel-size tp`: "cuda" takes the first tp visible ones,
// "cuda:N" or "cuda:2,3" names them (as many as tp, none twice: NCCL puts one rank on a GPU). `visible`:
// how many GPUs this process sees (-1: not checked). InvalidArgument naming both flags otherwise.
StatusOr<std::vector<int>> parse_cuda_devices(const std::string& device, int tp, int visible);

// Loads `weights` (validated first) onto the device named by options.device. Throws tandem::Error
// with an actionable message (unknown device, not enough memory, CUDA not built in).
std::unique_ptr<Backend> create_backend(const model::WeightSource& weights, const BackendOptions& options);

}  // namespace tandem::backend
