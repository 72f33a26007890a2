// The CudaBackend class: its constants, the layouts of one step, and its state. Internal to the CUDA
// backend (code outside src/backend/cuda reaches it through cuda_backend.h); included only by the .cu
// files that implement its methods.
//
// The forward pass on one GPU: bf16 weights (q/k/v and gate/up fused; or FP8 projections with their scales,
// fp8_weights.cu), bf16 paged KV cache, fp32 residual stream and fp32 accumulation everywhere; cuBLAS GEMMs,
// our kernels for the rest (kernels.cuh, attention.cuh, skinny_gemm.cuh, fp8_gemm.cuh, sampling.cuh). One
// stream; forward() ends with the logits on the host, so a device fault surfaces as Status::Internal from the
// same call.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/fp8_gemm.cuh"
#include "backend/cuda/launch_options.h"
#include "backend/cuda/profile.cuh"
#include "backend/cuda/skinny_gemm.cuh"
#include "parallel/shard_plan.h"

namespace tandem::backend::cuda {

constexpr size_t kAlign = 256;
constexpr int kInitialMaxTokens = 8192;   // activations are sized for this many tokens per step up front
constexpr int kInitialMaxLogits = 256;
constexpr int kMaxPartials = 4096;        // split-KV slots: [4096, 16, head_dim] fp32
constexpr std::array<int, 9> kGraphBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};  // decode batch sizes captured
constexpr int kGraphMinWidth = 16;        // block-table widths captured: 16, 32, 64, ... blocks
constexpr size_t kCublasWorkspaceBytes = 32ull << 20;
constexpr size_t kSkinnyPartialFloats = 1u << 20;  // split-K scratch of the skinny GEMM (4 MiB)
constexpr int kSkinnyCounters = 4096;              // its per-row-tile counters

inline size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// One decoder layer's weights, bf16, device (pointers into the weight arena).
struct LayerWeights {
  __nv_bfloat16* input_norm;  // [hidden]
  __nv_bfloat16* qkv;         // [q_size + 2 kv_size, hidden]: q, k, v rows fused
  __nv_bfloat16* qkv_bias;    // [q_size + 2 kv_size] or null
  __nv_bfloat16* q_norm;      // [head_dim] or null
  __nv_bfloat16* k_norm;      // [head_dim] or null
  __nv_bfloat16* o_proj;      // [hidden, q_size]
  __nv_bfloat16* post_norm;   // [hidden]
  __nv_bfloat16* gate_up;     // [2 inter, hidden]: gate rows then up rows
  __nv_bfloat16* down;        // [hidden, inter]
  // FP8 weights (fp8_weights.cu): set instead of qkv, o_proj, gate_up and down, same shapes.
  Fp8Linear qkv8, o8, gate_up8, down8;
};

// Where each array of one step's metadata sits in the packed buffer (byte offsets).
struct StepLayout {
  size_t ids = 0, positions = 0, slots = 0, tables = 0, rows = 0, items = 0, combines = 0, mma_items = 0, total = 0;
};

// What enqueue_step launches over: the device metadata and the step's sizes.
struct StepArgs {
  const std::byte* metadata = nullptr;  // device, laid out as `layout`
  StepLayout layout;
  int num_tokens = 0;
  int num_logits = 0;
  int max_blocks_per_seq = 0;
  int num_items = 0;
  int num_combines = 0;
  int num_mma_items = 0;
  bool decode = false;  // the attention items are decode tiles (AttentionPlan::decode)
  int decode_splits = 0;  // items per tile of a plan_decode_attention plan whose splits merge in-kernel (0: none)
};

class NcclCommunicator;

// One tensor-parallel rank (tensor_parallel_backend.cu): the shard this backend holds and the group it
// sums its partial results with. Without one the backend is the whole model on one GPU, unchanged.
struct CudaRank {
  parallel::ShardPlan plan;
  NcclCommunicator* comm = nullptr;  // not owned; outlives the backend
  bool inject_faults = false;        // whether TANDEM_INJECT_DEVICE_FAULT_AT_STEP applies to this rank
};

// See cuda_backend.h for what it does and backend.h for the interface and its thread-safety. Its methods
// live in cuda_backend.cu (set-up, weights, buffers, entry points), forward_step.cu (one step: plan,
// metadata, kernels, decode graphs) and kv_blocks.cu (KV blocks to and from the host and peers).
class CudaBackend final : public Backend {
 public:
  // `rank`: load only that shard and make its collectives (copied; null: the whole model).
  CudaBackend(const model::WeightSource& weights, const BackendOptions& options, const CudaRank* rank = nullptr);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const model::ModelConfig& config() const override { return config_; }
  const KvCacheSpec& kv_cache_spec() const override { return kv_; }
  std::string device_name() const override { return "cuda:" + std::to_string(device_); }
  Status forward(const ForwardBatch& batch, std::span<float> logits) override;
  Status forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) override;
  Status device_health() const override { return health_; }
  bool samples_on_device() const override { return true; }
  Status forward_sampled(const ForwardBatch& batch, const DeviceSamplingStep& step) override;
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override;
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override;
  StatusOr<KvExport> export_kv_handles() override;
  bool can_reach_peer(const KvExport& peer) override;
  Status copy_blocks_from_peer(const KvExport& peer, std::span<const int32_t> peer_blocks,
                               std::span<const int32_t> local_blocks, int layer_begin, int layer_end) override {
    return copy_with_peer(peer, peer_blocks, local_blocks, layer_begin, layer_end, true);
  }
  Status copy_blocks_to_peer(const KvExport& peer, std::span<const int32_t> local_blocks,
                             std::span<const int32_t> peer_blocks, int layer_begin, int layer_end) override {
    return copy_with_peer(peer, peer_blocks, local_blocks, layer_begin, layer_end, false);
  }
  // KV links over NCCL (kv_link.cu).
  std::string kv_link_device() override;
  StatusOr<std::string> make_kv_link_id() override;
  StatusOr<std::unique_ptr<KvLink>> open_kv_link(const std::string& link_id, int rank, int timeout_ms) override;
  // Sends or receives `blocks` over `comm` to/from its other rank, on the peer stream (kv_link.cu).
  Status link_transfer(NcclCommunicator& comm, std::span<const KvBlockRef> blocks, bool send, int timeout_ms);

 private:
  Status copy_with_peer(const KvExport& peer, std::span<const int32_t> peer_blocks, std::span<const int32_t> local_blocks,
                        int layer_begin, int layer_end, bool from_peer);
  using bf16 = __nv_bfloat16;

  void load_weights(const model::WeightSource& weights);
  // FP8 projections (fp8_weights.cu): upload or quantize them; y[rows, w.rows] bf16 = x * dequant(w)^T
  // (with silu_in, x is [rows, 2 w.cols] gate|up and silu(gate) * up is the operand).
  void load_fp8_weights(const model::WeightSource& weights);
  Status fp8_linear(const bf16* x, int rows, const Fp8Linear& w, void* y, bool silu_in);
  void allocate_kv_pool(const BackendOptions& options);
  Status ensure_workspace(int num_tokens, int num_logits);
  Status ensure_metadata(size_t bytes);
  void free_workspace();
  // y[rows, out] = x[rows, in] * w[out, in]^T; y bf16, or fp32 when y_fp32.
  Status gemm(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32);
  Status run_forward(const ForwardBatch& batch, std::span<float> logits);
  // TANDEM_INJECT_DEVICE_FAULT_AT_STEP: on the chosen forward, a real illegal-address fault.
  Status inject_fault_if_due();
  // Logs a failed step and keeps a device failure in health_.
  Status record_step_result(Status s);
  // What every forward entry point does after its own checks: refuse on a failed device, inject a due
  // fault, run the step, remember a device failure.
  Status run_checked_step(const ForwardBatch& batch, std::span<float> logits);
  Status run_decode_graph(const ForwardBatch& batch, std::span<float> logits);
  Status enqueue_step(const StepArgs& args);
  Status finish_step(std::span<float> logits);
  void fill_slots(const ForwardBatch& batch);
  static StepLayout layout_step(int num_tokens, size_t table_entries, int num_logits, size_t num_items, size_t num_combines,
                                size_t num_mma_items = 0);
  void clear_graphs();
  // Tensor parallel (no-ops without rank_): the sum of the ranks' o/down partial results in delta_, and
  // the lm_head's vocabulary shards gathered into logits_dev_ (tensor_parallel_backend.cu).
  Status reduce_partial_sums(int num_tokens);
  Status lm_head_and_gather(int num_logits);
  // One layer's pool: bf16 values (bf16 cache), or its bytes (any cache; an FP8 cache's kernels take these).
  bf16* layer_pool(int layer) const { return reinterpret_cast<bf16*>(layer_pool_bytes(layer)); }
  std::byte* layer_pool_bytes(int layer) const {
    return reinterpret_cast<std::byte*>(kv_pool_) + static_cast<size_t>(layer) * layer_pool_bytes_;
  }

  // With rank_: this rank's heads, KV heads and intermediate rows (the whole vocabulary: the logits are
  // gathered); the weights are read with the whole model's config.
  model::ModelConfig config_;
  std::optional<CudaRank> rank_;
  float* shard_logits_ = nullptr;     // rank_ only: [max_logits, vocab_shard] fp32, device: this rank's lm_head rows
  float* gathered_logits_ = nullptr;  // rank_ only: [world, max_logits, vocab_shard] fp32, device
  KvCacheSpec kv_;
  int device_ = 0;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  void* weight_arena_ = nullptr;  // every weight below, bf16, device
  bf16* embed_ = nullptr;         // [vocab, hidden] bf16, device
  bf16* lm_head_ = nullptr;       // [vocab, hidden] bf16, device (== embed_ when tied)
  bf16* final_norm_ = nullptr;    // [hidden] bf16, device
  float* inv_freq_ = nullptr;     // [head_dim / 2] fp32, device
  std::vector<LayerWeights> layers_;

  // [num_layers, num_blocks + 1] blocks of kv_.block_bytes() (bf16 [2, block_size, num_kv_heads, head_dim], or
  // FP8 values and scales: backend.h), device; block num_blocks is a scratch block the engine never sees
  // (graph padding tokens write their K/V there).
  bf16* kv_pool_ = nullptr;
  size_t layer_pool_bytes_ = 0;

  // Activations, sized for max_tokens_ tokens and max_logits_ logits rows; regrown when a step needs more.
  int max_tokens_ = 0;
  int max_logits_ = 0;
  float* residual_ = nullptr;  // [max_tokens, hidden] fp32, device
  bf16* normed_ = nullptr;     // [max_tokens, hidden] bf16, device
  bf16* qkv_ = nullptr;        // [max_tokens, q_size + 2 kv_size] bf16, device
  bf16* attn_out_ = nullptr;   // [max_tokens, q_size] bf16, device
  bf16* delta_ = nullptr;      // [max_tokens, hidden] bf16, device: o_proj / down_proj output
  bf16* gate_up_ = nullptr;    // [max_tokens, 2 inter] bf16, device
  bf16* act_ = nullptr;        // [max_tokens, inter] bf16, device
  float* logits_dev_ = nullptr;     // [max_logits, vocab] fp32, device
  int32_t* greedy_dev_ = nullptr;   // [max_logits] int32, device: argmax of each logits row
  std::span<int32_t> greedy_tokens_;  // set for the duration of forward_greedy/forward_sampled: where the tokens go
  // forward_sampled: the rows' parameters and edits, staged in pinned memory and copied up after the
  // logits are enqueued; the rows' logprobs come back through the same buffer.
  bool sampling_ = false;                 // the step in flight draws (else argmax or whole rows)
  size_t sample_capacity_ = 0;
  std::byte* sample_host_ = nullptr;      // [sample_capacity] pinned host: rows | edits | masks | logprobs
  std::byte* sample_dev_ = nullptr;       // [sample_capacity] device, same layout
  size_t sample_upload_bytes_ = 0;        // rows + edits (+ masks, staged in finish_step)
  size_t sample_masks_offset_ = 0;        // where the masks go in the staging buffer
  std::span<const uint32_t> sample_masks_;  // DeviceSamplingStep::masks, read after sample_await_masks_
  std::function<void()> sample_await_masks_;
  size_t sample_logprobs_offset_ = 0;
  std::span<RowLogprobs> sample_logprobs_;  // where the logprobs go; empty when no row asks
  // The first CUDA failure of a step, kept: CUDA errors such as an illegal address are sticky, so
  // every later step would fail as well (see Backend::device_health).
  Status health_;
  int fault_step_ = injected_device_fault_step();  // 0 on the tensor-parallel ranks that do not inject
  int num_forwards_ = 0;
  float* partial_out_ = nullptr;    // [kMaxPartials, kAttentionRows, head_dim] fp32, device
  float* partial_ml_ = nullptr;     // [kMaxPartials, kAttentionRows, 2] fp32, device
  // One step's metadata, packed: token ids, positions, slots, block tables, logits rows, attention plan.
  size_t metadata_capacity_ = 0;
  std::byte* metadata_host_ = nullptr;  // [metadata_capacity] bytes, pinned host
  std::byte* metadata_dev_ = nullptr;   // [metadata_capacity] bytes, device
  std::vector<int32_t> slots_;          // [num_tokens] host scratch

  // Decode steps captured as CUDA graphs, one per (batch bucket, block-table width); they hold the
  // activation buffers' addresses, so they are dropped whenever ensure_workspace reallocates.
  struct DecodeGraph {
    int bucket = 0;
    int width = 0;
    int splits = 1;
    cudaGraphExec_t exec = nullptr;
    std::byte* metadata = nullptr;  // [metadata_bytes] bytes, device: this graph's step metadata
    size_t metadata_bytes = 0;
  };
  bool graphs_enabled_ = true;
  // Prefill chunks of >= 16 tokens through the tensor-core attention kernel (head_dim 64/128, sm_80+).
  bool use_mma_ = false;
  std::vector<DecodeGraph> graphs_;
  // Peer copies (copy_blocks_from/to_peer) may come from transfer threads while the engine thread runs
  // forward(): they use a stream and block-id buffers of their own, serialized by peer_mu_.
  std::mutex peer_mu_;
  cudaStream_t peer_stream_ = nullptr;  // GUARDED_BY(peer_mu_)
  // Peers' KV allocations opened through CUDA IPC, by handle bytes; closed in the destructor.
  std::map<std::string, void*> peer_pools_;  // GUARDED_BY(peer_mu_)
  size_t peer_ids_capacity_ = 0;           // GUARDED_BY(peer_mu_): int32 entries
  int32_t* peer_ids_host_ = nullptr;       // [peer_ids_capacity] int32, pinned host: [peer ids][local ids]
  int32_t* peer_ids_dev_ = nullptr;        // [peer_ids_capacity] int32, device
  void* cublas_workspace_ = nullptr;  // [kCublasWorkspaceBytes] bytes, device (fixed, so GEMMs can be captured)
  // GEMMs of <= kSkinnyMaxRows rows (decode steps) through our skinny kernel instead of cuBLAS (sm_80+).
  bool use_skinny_ = false;
  // How every kernel is launched (PDL on sm_90+); fixed in the constructor.
  LaunchOptions launch_;
  SkinnyGemmWorkspace skinny_ws_;  // partials [kSkinnyPartialFloats] fp32, counters [kSkinnyCounters] int32, device
  int32_t* combine_counters_ = nullptr;  // [kMaxPartials] int32, device, zero between steps (decode split merges)

  // FP8 weights: config_.quantization.is_fp8() (fp8_weights.cu, fp8_gemm.cuh).
  bool fp8_ = false;
  bool fp8_use_lt_ = false;          // cuBLASLt FP8 GEMMs for > kFp8GemvMaxRows tokens, else dequantize + bf16
  void* fp8_arena_ = nullptr;        // every Fp8Linear's values and scales, device
  bf16* fp8_dequant_ = nullptr;      // [largest FP8 projection] bf16, device: the dequantizing path's scratch
  uint8_t* fp8_act_ = nullptr;       // [max_tokens, max(hidden, q_size, inter)] e4m3, device: per-token activations
  float* fp8_act_scales_ = nullptr;  // [max_tokens] fp32, device
  std::unique_ptr<Fp8Gemm> fp8_gemm_;

  KernelProfile profile_;  // TANDEM_PROFILE_KERNELS=1 (profile.cuh)
  StepTiming step_timing_;  // TANDEM_PROFILE_STEPS=1 (profile.cuh)
  void mark(StepPart part) { profile_.mark(part, stream_); }
};

}  // namespace tandem::backend::cuda
