// CudaBackend: the forward pass on one GPU. bf16 weights (q/k/v and gate/up fused), bf16 paged KV cache,
// fp32 residual stream and fp32 accumulation everywhere; cuBLAS GEMMs, our kernels for the rest
// (kernels.cuh, attention.cuh). One stream; forward() ends with the logits on the host, so a device
// fault surfaces as Status::Internal from the same call.
#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/cuda_log.h"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/sampling.cuh"
#include "backend/cuda/skinny_gemm.cuh"
#include "common/error.h"

namespace tandem::backend::cuda {
namespace {

using model::DType;
using model::TensorSpec;

constexpr size_t kAlign = 256;
constexpr int kInitialMaxTokens = 8192;   // activations are sized for this many tokens per step up front
constexpr int kInitialMaxLogits = 256;
constexpr int kMaxPartials = 4096;        // split-KV slots: [4096, 16, head_dim] fp32
constexpr std::array<int, 9> kGraphBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};  // decode batch sizes captured
constexpr int kGraphMinWidth = 16;        // block-table widths captured: 16, 32, 64, ... blocks
constexpr size_t kCublasWorkspaceBytes = 32ull << 20;
constexpr size_t kSkinnyPartialFloats = 1u << 20;  // split-K scratch of the skinny GEMM (4 MiB)
constexpr int kSkinnyCounters = 4096;              // its per-row-tile counters

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// A profiling switch of the environment (TANDEM_PROFILE_*): on when set to 1.
bool profiling_switched_on(const char* name) {
  const char* value = std::getenv(name);
  return value && std::string(value) == "1";
}
double gib(size_t bytes) { return static_cast<double>(bytes) / (1ull << 30); }

int parse_device(const std::string& device) {
  if (device == "cuda") return 0;
  const std::string prefix = "cuda:";
  if (device.rfind(prefix, 0) != 0) throw Error("--device " + device + ": expected cuda:N");
  try {
    size_t used = 0;
    const int index = std::stoi(device.substr(prefix.size()), &used);
    if (used + prefix.size() != device.size() || index < 0) throw std::invalid_argument(device);
    return index;
  } catch (const std::exception&) {
    throw Error("--device " + device + ": expected cuda:N with N a device index");
  }
}

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

class CudaBackend final : public Backend {
 public:
  CudaBackend(const model::WeightSource& weights, const BackendOptions& options);
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

 private:
  Status copy_with_peer(const KvExport& peer, std::span<const int32_t> peer_blocks, std::span<const int32_t> local_blocks,
                        int layer_begin, int layer_end, bool from_peer);
  using bf16 = __nv_bfloat16;

  void load_weights(const model::WeightSource& weights);
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
  bf16* layer_pool(int layer) const { return kv_pool_ + static_cast<size_t>(layer) * layer_pool_elements_; }

  model::ModelConfig config_;
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

  // [num_layers, num_blocks + 1, 2, block_size, num_kv_heads, head_dim] bf16, device; block num_blocks is
  // a scratch block the engine never sees (graph padding tokens write their K/V there).
  bf16* kv_pool_ = nullptr;
  size_t layer_pool_elements_ = 0;

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
  std::byte* sample_host_ = nullptr;      // [sample_capacity] pinned host: rows | edits | logprobs
  std::byte* sample_dev_ = nullptr;       // [sample_capacity] device, same layout
  size_t sample_upload_bytes_ = 0;        // rows + edits
  size_t sample_logprobs_offset_ = 0;
  std::span<RowLogprobs> sample_logprobs_;  // where the logprobs go; empty when no row asks
  // The first CUDA failure of a step, kept: CUDA errors such as an illegal address are sticky, so
  // every later step would fail as well (see Backend::device_health).
  Status health_;
  const int fault_step_ = injected_device_fault_step();
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

  // TANDEM_PROFILE_KERNELS=1: steps run without CUDA graphs, with an event between the parts of the
  // step (the kernels of one kind, all layers), and the destructor logs where each phase's GPU time
  // went. The events break PDL's overlap and the graphs' launch savings, so the totals read high; the
  // shares are what it is for.
  enum Part { kEmbed, kNorm, kQkvGemm, kQkvRope, kAttention, kOGemm, kGateUpGemm, kDownGemm, kLmHead, kArgmax, kNumParts };
  struct Profile {
    bool enabled = false;
    std::vector<std::pair<Part, cudaEvent_t>> marks;  // this step's events, in stream order, each ending a part
    cudaEvent_t start = nullptr;
    std::vector<cudaEvent_t> pool;  // events to reuse
    double ms[2][kNumParts] = {};   // [prefill, decode][part]
    int64_t steps[2] = {};
    bool decode = false;  // the step being enqueued is a decode step
  } profile_;
  void mark(Part part);
  void collect_profile();
  void log_profile();

  // TANDEM_PROFILE_STEPS=1: where the wall time of a decode step through a CUDA graph goes, with the
  // graphs and PDL left on (what the benchmarks run): the backend's host work before the upload (plan,
  // metadata packing), the GPU from the metadata upload to the tokens on the host (events around the
  // replay), and the engine's time between one step's return and the next step's call. The share of
  // the step the GPU is busy says how much overlapping the host work with the GPU could buy.
  struct StepTiming {
    bool enabled = false;
    cudaEvent_t upload = nullptr, done = nullptr;  // around the replay
    bool in_step = false;                          // a graph step is between its two events
    std::chrono::steady_clock::time_point entered, returned;
    bool returned_valid = false;  // the previous forward call was a graph step that returned
    double host_prep_us = 0, gpu_us = 0, engine_gap_us = 0;
    int64_t steps = 0, gaps = 0;
  } step_timing_;
  void end_step_timing();
  void log_step_timing();
};

CudaBackend::CudaBackend(const model::WeightSource& weights, const BackendOptions& options)
    : config_(weights.config()), device_(parse_device(options.device)) {
  weights.validate();
  const auto& c = config_;
  if (c.head_dim != 16 && c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) {
    throw Error("cuda backend: head_dim " + std::to_string(c.head_dim) + " is not supported (16, 32, 64 or 128)");
  }
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    throw Error("--device " + options.device + ": no usable CUDA device (" +
                (err != cudaSuccess ? std::string(cudaGetErrorString(err)) : std::string("none found")) +
                "); use --device cpu");
  }
  if (device_ >= count) {
    throw Error("--device " + options.device + ": this machine has " + std::to_string(count) + " CUDA device(s)");
  }
  TANDEM_CUDA_THROW(cudaSetDevice(device_), device_);
  cudaDeviceProp prop{};
  TANDEM_CUDA_THROW(cudaGetDeviceProperties(&prop, device_), device_);
  num_sms_ = prop.multiProcessorCount;
  use_mma_ = (c.head_dim == 64 || c.head_dim == 128) && prop.major >= 8;
  use_skinny_ = prop.major >= 8;
  profile_.enabled = profiling_switched_on("TANDEM_PROFILE_KERNELS");
  step_timing_.enabled = profiling_switched_on("TANDEM_PROFILE_STEPS");
  launch_ = launch_options_for(prop.major);
  TANDEM_CUDA_THROW(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), device_);
  TANDEM_CUBLAS_THROW(cublasCreate(&cublas_), device_);
  TANDEM_CUBLAS_THROW(cublasSetStream(cublas_, stream_), device_);
  // A fixed cuBLAS workspace: GEMMs captured in CUDA graphs must not allocate.
  TANDEM_CUDA_THROW(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes), device_);
  TANDEM_CUBLAS_THROW(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes), device_);
  TANDEM_CUDA_THROW(cudaMalloc(&skinny_ws_.partials, kSkinnyPartialFloats * sizeof(float)), device_);
  TANDEM_CUDA_THROW(cudaMalloc(&skinny_ws_.counters, kSkinnyCounters * sizeof(int32_t)), device_);
  TANDEM_CUDA_THROW(cudaMemset(skinny_ws_.counters, 0, kSkinnyCounters * sizeof(int32_t)), device_);
  TANDEM_CUDA_THROW(cudaMalloc(&combine_counters_, kMaxPartials * sizeof(int32_t)), device_);
  TANDEM_CUDA_THROW(cudaMemset(combine_counters_, 0, kMaxPartials * sizeof(int32_t)), device_);
  skinny_ws_.partial_floats = kSkinnyPartialFloats;
  skinny_ws_.num_counters = kSkinnyCounters;
  graphs_enabled_ = options.cuda_graphs && !profile_.enabled;

  kv_.num_layers = c.num_layers;
  kv_.block_size = options.block_size;
  kv_.num_kv_heads = c.num_kv_heads;
  kv_.head_dim = c.head_dim;
  kv_.dtype = DType::kBF16;

  const auto start = std::chrono::steady_clock::now();
  load_weights(weights);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  throw_if_error(ensure_workspace(kInitialMaxTokens, kInitialMaxLogits));
  allocate_kv_pool(options);
  char line[512];
  std::snprintf(line, sizeof(line),
                "cuda backend: device=cuda:%d gpu=\"%s\" model=%s layers=%d load_seconds=%.2f kv_blocks=%d kv_tokens=%lld "
                "kv_bytes=%zu kv_gib=%.2f",
                device_, prop.name, weights.describe().c_str(), c.num_layers, load_s, kv_.num_blocks,
                static_cast<long long>(kv_.num_blocks) * kv_.block_size, kv_.block_bytes() * kv_.num_blocks * c.num_layers,
                gib(kv_.block_bytes() * kv_.num_blocks * c.num_layers));
  log_info(line);
}

CudaBackend::~CudaBackend() {
  // Destructors do not throw: errors here are logged only.
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  if (profile_.enabled) log_profile();
  if (step_timing_.enabled) log_step_timing();
  clear_graphs();
  if (peer_stream_) cudaStreamSynchronize(peer_stream_);
  for (auto& [handle, ptr] : peer_pools_) cudaIpcCloseMemHandle(ptr);
  cudaFreeHost(peer_ids_host_);
  cudaFree(peer_ids_dev_);
  cudaFreeHost(sample_host_);
  cudaFree(sample_dev_);
  if (peer_stream_) cudaStreamDestroy(peer_stream_);
  free_workspace();
  cudaFree(cublas_workspace_);
  cudaFree(skinny_ws_.partials);
  cudaFree(skinny_ws_.counters);
  cudaFree(combine_counters_);
  cudaFree(kv_pool_);
  cudaFree(weight_arena_);
  cudaFree(inv_freq_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::load_weights(const model::WeightSource& weights) {
  const auto& c = config_;
  const std::vector<TensorSpec> specs = model::expected_tensors(c);
  auto find = [&](const std::string& name) -> const TensorSpec& {
    for (const auto& s : specs) {
      if (s.name == name) return s;
    }
    throw Error("cuda backend: the model has no tensor " + name);
  };
  auto bytes_of = [](const TensorSpec& s) { return static_cast<size_t>(model::num_elements(s.shape)) * sizeof(bf16); };

  // One upload per device tensor; fused tensors are read part by part into one staging buffer.
  struct Upload {
    bf16** dst;
    std::vector<const TensorSpec*> parts;
    size_t bytes = 0;
    size_t offset = 0;  // in the arena
  };
  std::vector<Upload> uploads;
  auto add = [&](bf16** dst, std::vector<std::string> names) {
    Upload u;
    u.dst = dst;
    for (const auto& n : names) {
      u.parts.push_back(&find(n));
      u.bytes += bytes_of(*u.parts.back());
    }
    uploads.push_back(std::move(u));
  };
  add(&embed_, {"model.embed_tokens.weight"});
  layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    add(&w.input_norm, {p + "input_layernorm.weight"});
    add(&w.qkv, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"});
    if (c.attention_bias) add(&w.qkv_bias, {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"});
    if (c.qk_norm) {
      add(&w.q_norm, {p + "self_attn.q_norm.weight"});
      add(&w.k_norm, {p + "self_attn.k_norm.weight"});
    }
    add(&w.o_proj, {p + "self_attn.o_proj.weight"});
    add(&w.post_norm, {p + "post_attention_layernorm.weight"});
    add(&w.gate_up, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    add(&w.down, {p + "mlp.down_proj.weight"});
  }
  add(&final_norm_, {"model.norm.weight"});
  if (!c.tie_word_embeddings) add(&lm_head_, {"lm_head.weight"});

  size_t total = 0, largest = 0;
  for (auto& u : uploads) {
    u.offset = total;
    total += align_up(u.bytes);
    largest = std::max(largest, u.bytes);
  }
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_THROW(cudaMemGetInfo(&free_bytes, &total_bytes), device_);
  if (total > free_bytes) {
    throw Error("cuda:" + std::to_string(device_) + ": the weights of " + weights.describe() + " need " +
                std::to_string(gib(total)) + " GiB but only " + std::to_string(gib(free_bytes)) + " GiB of " +
                std::to_string(gib(total_bytes)) +
                " GiB is free; free the GPU (or lower --gpu-memory-utilization of the other processes on it)");
  }
  TANDEM_CUDA_THROW(cudaMalloc(&weight_arena_, total), device_);
  for (auto& u : uploads) *u.dst = reinterpret_cast<bf16*>(static_cast<std::byte*>(weight_arena_) + u.offset);
  if (c.tie_word_embeddings) lm_head_ = embed_;

  // Two pinned staging buffers: the host reads (mmap'd checkpoint or generated weights) into one while
  // the copy engine uploads the other.
  std::byte* staging[2] = {nullptr, nullptr};  // [largest] bytes each, pinned host
  cudaEvent_t uploaded[2] = {nullptr, nullptr};
  auto cleanup = [&]() {
    for (int i = 0; i < 2; ++i) {
      if (uploaded[i]) cudaEventDestroy(uploaded[i]);
      if (staging[i]) cudaFreeHost(staging[i]);
    }
  };
  try {
    for (int i = 0; i < 2; ++i) {
      TANDEM_CUDA_THROW(cudaHostAlloc(&staging[i], largest, cudaHostAllocDefault), device_);
      TANDEM_CUDA_THROW(cudaEventCreateWithFlags(&uploaded[i], cudaEventDisableTiming), device_);
    }
    for (size_t i = 0; i < uploads.size(); ++i) {
      const int slot = static_cast<int>(i % 2);
      TANDEM_CUDA_THROW(cudaEventSynchronize(uploaded[slot]), device_);  // its previous upload is done
      size_t offset = 0;
      for (const TensorSpec* part : uploads[i].parts) {
        weights.read(*part, DType::kBF16, staging[slot] + offset);
        offset += bytes_of(*part);
      }
      TANDEM_CUDA_THROW(cudaMemcpyAsync(*uploads[i].dst, staging[slot], uploads[i].bytes, cudaMemcpyHostToDevice, stream_),
                        device_);
      TANDEM_CUDA_THROW(cudaEventRecord(uploaded[slot], stream_), device_);
    }
    TANDEM_CUDA_THROW(cudaStreamSynchronize(stream_), device_);
  } catch (...) {
    cudaStreamSynchronize(stream_);
    cleanup();
    throw;
  }
  cleanup();

  const std::vector<float> inv = model::rope_inv_freq(c);
  TANDEM_CUDA_THROW(cudaMalloc(&inv_freq_, inv.size() * sizeof(float)), device_);
  TANDEM_CUDA_THROW(cudaMemcpy(inv_freq_, inv.data(), inv.size() * sizeof(float), cudaMemcpyHostToDevice), device_);
}

void CudaBackend::allocate_kv_pool(const BackendOptions& options) {
  const size_t per_block = kv_.block_bytes() * kv_.num_layers;  // one block id across all layers
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_THROW(cudaMemGetInfo(&free_bytes, &total_bytes), device_);
  const std::string where = "cuda:" + std::to_string(device_);
  if (options.num_kv_blocks > 0) {
    kv_.num_blocks = options.num_kv_blocks;
    const size_t asked = per_block * (static_cast<size_t>(kv_.num_blocks) + 1);
    if (asked > free_bytes) {
      throw Error(where + ": " + std::to_string(kv_.num_blocks) + " KV blocks need " + std::to_string(gib(asked)) +
                  " GiB but only " + std::to_string(gib(free_bytes)) + " GiB is free after the weights; lower --num-kv-blocks");
    }
  } else {
    if (options.gpu_memory_utilization <= 0.0 || options.gpu_memory_utilization > 1.0) {
      throw Error("--gpu-memory-utilization must be in (0, 1], got " + std::to_string(options.gpu_memory_utilization));
    }
    const size_t budget = static_cast<size_t>(static_cast<double>(free_bytes) * options.gpu_memory_utilization);
    const size_t blocks = budget / per_block > 0 ? budget / per_block - 1 : 0;
    if (blocks < 1) {
      throw Error(where + ": --gpu-memory-utilization " + std::to_string(options.gpu_memory_utilization) + " of the " +
                  std::to_string(gib(free_bytes)) + " GiB free after the weights leaves no room for one KV block (" +
                  std::to_string(per_block) + " bytes); raise --gpu-memory-utilization or free the GPU");
    }
    kv_.num_blocks = static_cast<int>(std::min<size_t>(blocks, INT32_MAX / std::max(1, kv_.block_size)));
  }
  // One more block than the engine sees: padding tokens of graph-captured decode steps write there.
  layer_pool_elements_ = static_cast<size_t>(kv_.num_blocks + 1) * kv_.block_elements();
  const size_t bytes = per_block * (kv_.num_blocks + 1);
  cudaError_t err = cudaMalloc(&kv_pool_, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(where + ": allocating the KV cache (" + std::to_string(kv_.num_blocks) + " blocks, " +
                std::to_string(gib(bytes)) + " GiB) failed with " + cudaGetErrorString(err) + " (" +
                std::to_string(gib(free_bytes)) + " GiB was free); lower --gpu-memory-utilization or --num-kv-blocks");
  }
  // Zeroed so that a read of a never-written slot is deterministic (it is masked anyway).
  TANDEM_CUDA_THROW(cudaMemsetAsync(kv_pool_, 0, bytes, stream_), device_);
  TANDEM_CUDA_THROW(cudaStreamSynchronize(stream_), device_);
}

void CudaBackend::free_workspace() {
  for (void* p : {static_cast<void*>(residual_), static_cast<void*>(normed_), static_cast<void*>(qkv_),
                  static_cast<void*>(attn_out_), static_cast<void*>(delta_), static_cast<void*>(gate_up_),
                  static_cast<void*>(act_), static_cast<void*>(logits_dev_), static_cast<void*>(greedy_dev_),
                  static_cast<void*>(partial_out_),
                  static_cast<void*>(partial_ml_), static_cast<void*>(metadata_dev_)}) {
    cudaFree(p);
  }
  if (metadata_host_) cudaFreeHost(metadata_host_);
  residual_ = nullptr;
  normed_ = qkv_ = attn_out_ = delta_ = gate_up_ = act_ = nullptr;
  logits_dev_ = partial_out_ = partial_ml_ = nullptr;
  greedy_dev_ = nullptr;
  metadata_dev_ = metadata_host_ = nullptr;
  max_tokens_ = max_logits_ = 0;
  metadata_capacity_ = 0;
}

Status CudaBackend::ensure_workspace(int num_tokens, int num_logits) {
  if (num_tokens <= max_tokens_ && num_logits <= max_logits_) return Status::Ok();
  clear_graphs();  // they captured the old buffers' addresses
  const auto& c = config_;
  const int tokens = std::max(num_tokens, max_tokens_);
  const int logits = std::max(num_logits, max_logits_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  // Keep the metadata buffers; everything sized by tokens or logits is reallocated.
  const size_t t = static_cast<size_t>(tokens);
  const size_t qkv_size = static_cast<size_t>(c.q_size() + 2 * c.kv_size());
  struct Want {
    void** ptr;
    size_t bytes;
  };
  const Want wants[] = {
      {reinterpret_cast<void**>(&residual_), t * c.hidden_size * sizeof(float)},
      {reinterpret_cast<void**>(&normed_), t * c.hidden_size * sizeof(bf16)},
      {reinterpret_cast<void**>(&qkv_), t * qkv_size * sizeof(bf16)},
      {reinterpret_cast<void**>(&attn_out_), t * c.q_size() * sizeof(bf16)},
      {reinterpret_cast<void**>(&delta_), t * c.hidden_size * sizeof(bf16)},
      {reinterpret_cast<void**>(&gate_up_), t * 2 * c.intermediate_size * sizeof(bf16)},
      {reinterpret_cast<void**>(&act_), t * c.intermediate_size * sizeof(bf16)},
      {reinterpret_cast<void**>(&logits_dev_), static_cast<size_t>(logits) * c.vocab_size * sizeof(float)},
      {reinterpret_cast<void**>(&greedy_dev_), static_cast<size_t>(logits) * sizeof(int32_t)},
      {reinterpret_cast<void**>(&partial_out_), static_cast<size_t>(kMaxPartials) * kAttentionRows * c.head_dim * sizeof(float)},
      {reinterpret_cast<void**>(&partial_ml_), static_cast<size_t>(kMaxPartials) * kAttentionRows * 2 * sizeof(float)},
  };
  for (const Want& w : wants) {
    cudaFree(*w.ptr);
    *w.ptr = nullptr;
  }
  for (const Want& w : wants) {
    cudaError_t err = cudaMalloc(w.ptr, w.bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      max_tokens_ = max_logits_ = 0;
      return Status::ResourceExhausted("cuda:" + std::to_string(device_) + ": activations for " + std::to_string(tokens) +
                                       " tokens need " + std::to_string(w.bytes) + " more bytes, " +
                                       std::to_string(free_bytes) + " free: " + cudaGetErrorString(err) +
                                       "; schedule fewer tokens per step");
    }
  }
  max_tokens_ = tokens;
  max_logits_ = logits;
  return Status::Ok();
}

Status CudaBackend::ensure_metadata(size_t bytes) {
  if (bytes <= metadata_capacity_) return Status::Ok();
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  cudaFree(metadata_dev_);
  if (metadata_host_) cudaFreeHost(metadata_host_);
  metadata_dev_ = metadata_host_ = nullptr;
  metadata_capacity_ = 0;
  const size_t capacity = std::max<size_t>(bytes * 3 / 2, 1 << 20);
  TANDEM_CUDA_RETURN(cudaMalloc(&metadata_dev_, capacity), device_);
  TANDEM_CUDA_RETURN(cudaHostAlloc(&metadata_host_, capacity, cudaHostAllocDefault), device_);
  metadata_capacity_ = capacity;
  return Status::Ok();
}

Status CudaBackend::gemm(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32) {
  if (use_skinny_ && skinny_gemm_supported(rows, in, x, w) && skinny_gemm_preferred(rows, in, out)) {
    TANDEM_CUDA_RETURN(launch_skinny_gemm(x, rows, in, w, out, y, y_fp32, skinny_ws_, num_sms_, stream_, launch_),
                       device_);
    return Status::Ok();
  }
  // Row-major y[rows, out] = x[rows, in] w[out, in]^T is column-major y^T[out, rows] = w^T x^T.
  const float alpha = 1.0f, beta = 0.0f;
  TANDEM_CUBLAS_RETURN(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &alpha, w, CUDA_R_16BF, in, x,
                                    CUDA_R_16BF, in, &beta, y, y_fp32 ? CUDA_R_32F : CUDA_R_16BF, out,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                       device_);
  return Status::Ok();
}

namespace {

// The injected fault: a store through an address no allocation holds, the same sticky
// cudaErrorIllegalAddress a kernel bug would raise.
__global__ void store_to_unmapped_address(int* unmapped) { *unmapped = 1; }

}  // namespace

Status CudaBackend::inject_fault_if_due() {
  if (fault_step_ <= 0 || ++num_forwards_ != fault_step_) return Status::Ok();
  log_error("cuda backend: injecting an illegal-address fault at forward " + std::to_string(fault_step_) +
            " (TANDEM_INJECT_DEVICE_FAULT_AT_STEP)");
  store_to_unmapped_address<<<1, 1, 0, stream_>>>(reinterpret_cast<int*>(uintptr_t{16}));
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  return Status::Ok();
}

Status CudaBackend::record_step_result(Status s) {
  if (s.ok()) return s;
  log_error(std::string("cuda backend: step failed: ") + s.message());
  // Internal is what the CUDA and cuBLAS checks return; bad batches and activation sizes are other codes.
  if (s.code() == StatusCode::kInternal) health_ = s;
  return s;
}

Status CudaBackend::run_checked_step(const ForwardBatch& batch, std::span<float> logits) {
  if (step_timing_.enabled) {
    step_timing_.entered = std::chrono::steady_clock::now();
    step_timing_.in_step = false;  // set by a graph step once its first event is in the stream
  }
  if (!health_.ok()) return health_;
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  Status injected = inject_fault_if_due();
  if (!injected.ok()) return record_step_result(injected);
  return record_step_result(run_forward(batch, logits));
}

Status CudaBackend::forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) {
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  if (tokens.size() != static_cast<size_t>(batch.num_logits())) return Status::InvalidArgument("tokens buffer must be [num_logits]");
  if (batch.num_tokens() == 0) return Status::Ok();
  greedy_tokens_ = tokens;
  Status s = run_checked_step(batch, {});
  greedy_tokens_ = {};
  return s;
}

Status CudaBackend::forward_sampled(const ForwardBatch& batch, const DeviceSamplingStep& step) {
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  const size_t n = static_cast<size_t>(batch.num_logits());
  if (step.tokens.size() != n || step.rows.size() != n) return Status::InvalidArgument("rows and tokens must be [num_logits]");
  bool any_logprobs = false;
  for (const RowSampling& r : step.rows) {
    if (r.edits_begin < 0 || r.edits_end < r.edits_begin || static_cast<size_t>(r.edits_end) > step.edits.size()) {
      return Status::InvalidArgument("a row's edits are outside the step's edit list");
    }
    if (r.num_logprobs > kMaxTopLogprobs) return Status::InvalidArgument("at most 20 top logprobs");
    any_logprobs = any_logprobs || r.num_logprobs >= 0;
  }
  if (any_logprobs && step.logprobs.size() != n) return Status::InvalidArgument("logprobs must be [num_logits]");
  if (batch.num_tokens() == 0) return Status::Ok();
  if (!health_.ok()) return health_;
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  // One staging buffer, [rows | edits | logprobs], pinned on the host and mirrored on the device; the
  // logprobs come back into the pinned part and are copied out once the step is done (finish_step).
  const size_t rows_bytes = sizeof(RowSampling) * n, edits_bytes = sizeof(LogitEdit) * step.edits.size();
  const size_t logprobs_offset = (rows_bytes + edits_bytes + 15) / 16 * 16;
  const size_t total = logprobs_offset + (any_logprobs ? sizeof(RowLogprobs) * n : 0);
  if (total > sample_capacity_) {
    // The previous step's copies may still read the old buffers.
    TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
    const size_t capacity = std::max(total, 2 * sample_capacity_);
    cudaFreeHost(sample_host_);
    cudaFree(sample_dev_);
    sample_host_ = nullptr;
    sample_dev_ = nullptr;
    sample_capacity_ = 0;
    TANDEM_CUDA_RETURN(cudaMallocHost(&sample_host_, capacity), device_);
    TANDEM_CUDA_RETURN(cudaMalloc(&sample_dev_, capacity), device_);
    sample_capacity_ = capacity;
  }
  std::memcpy(sample_host_, step.rows.data(), rows_bytes);
  if (edits_bytes > 0) std::memcpy(sample_host_ + rows_bytes, step.edits.data(), edits_bytes);
  sample_upload_bytes_ = rows_bytes + edits_bytes;
  sample_logprobs_offset_ = logprobs_offset;
  sample_logprobs_ = any_logprobs ? step.logprobs : std::span<RowLogprobs>{};
  sampling_ = true;
  greedy_tokens_ = step.tokens;
  Status s = run_checked_step(batch, {});
  greedy_tokens_ = {};
  sampling_ = false;
  sample_logprobs_ = {};
  return s;
}

Status CudaBackend::forward(const ForwardBatch& batch, std::span<float> logits) {
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  if (logits.size() != static_cast<size_t>(batch.num_logits()) * config_.vocab_size) {
    return Status::InvalidArgument("logits buffer must be [num_logits, vocab_size]");
  }
  if (batch.num_tokens() == 0) return Status::Ok();
  return run_checked_step(batch, logits);
}

StepLayout CudaBackend::layout_step(int num_tokens, size_t table_entries, int num_logits, size_t num_items,
                                     size_t num_combines, size_t num_mma_items) {
  StepLayout l;
  size_t offset = 0;
  auto reserve = [&](size_t bytes) {
    const size_t at = offset;
    offset = align_up(offset + bytes);
    return at;
  };
  l.ids = reserve(sizeof(int32_t) * num_tokens);
  l.positions = reserve(sizeof(int32_t) * num_tokens);
  l.slots = reserve(sizeof(int32_t) * num_tokens);
  l.tables = reserve(sizeof(int32_t) * table_entries);
  l.rows = reserve(sizeof(int32_t) * num_logits);
  l.items = reserve(sizeof(AttentionWorkItem) * num_items);
  l.combines = reserve(sizeof(AttentionCombineItem) * num_combines);
  l.mma_items = reserve(sizeof(AttentionWorkItem) * num_mma_items);
  l.total = offset;
  return l;
}

Status CudaBackend::enqueue_step(const StepArgs& a) {
  const auto& c = config_;
  const int n = a.num_tokens;
  const int hidden = c.hidden_size, q_size = c.q_size(), kv_size = c.kv_size();
  const int qkv_size = q_size + 2 * kv_size, inter = c.intermediate_size;
  const std::byte* d = a.metadata;
  const int32_t* d_ids = reinterpret_cast<const int32_t*>(d + a.layout.ids);
  const int32_t* d_pos = reinterpret_cast<const int32_t*>(d + a.layout.positions);
  const int32_t* d_slots = reinterpret_cast<const int32_t*>(d + a.layout.slots);
  const int32_t* d_tables = reinterpret_cast<const int32_t*>(d + a.layout.tables);
  const int32_t* d_rows = reinterpret_cast<const int32_t*>(d + a.layout.rows);

  profile_.decode = a.decode || (a.num_tokens == a.num_logits && a.num_mma_items == 0 && a.num_tokens <= 256);
  mark(kNumParts);  // the step's start
  TANDEM_CUDA_RETURN(launch_embedding(d_ids, embed_, residual_, n, hidden, stream_, launch_), device_);
  mark(kEmbed);
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // The previous layer's MLP output joins the residual here (none before the first layer).
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, l == 0 ? nullptr : delta_, w.input_norm, normed_, nullptr, n,
                                           hidden, c.rms_norm_eps, true, stream_, launch_),
                       device_);
    mark(kNorm);
    TANDEM_RETURN_IF_ERROR(gemm(normed_, n, hidden, w.qkv, qkv_size, qkv_, false));
    mark(kQkvGemm);
    QkvParams qp;
    qp.qkv = qkv_;
    qp.bias = w.qkv_bias;
    qp.q_norm = w.q_norm;
    qp.k_norm = w.k_norm;
    qp.inv_freq = inv_freq_;
    qp.positions = d_pos;
    qp.slots = d_slots;
    qp.kv_pool = layer_pool(l);
    qp.num_tokens = n;
    qp.num_heads = c.num_heads;
    qp.num_kv_heads = c.num_kv_heads;
    qp.head_dim = c.head_dim;
    qp.block_size = kv_.block_size;
    qp.eps = c.rms_norm_eps;
    TANDEM_CUDA_RETURN(launch_qkv_rope_kv_write(qp, stream_, launch_), device_);
    mark(kQkvRope);
    AttentionParams ap;
    ap.q = qkv_;
    ap.q_row_stride = qkv_size;
    ap.kv_pool = layer_pool(l);
    ap.block_tables = d_tables;
    ap.max_blocks_per_seq = a.max_blocks_per_seq;
    ap.positions = d_pos;
    ap.out = attn_out_;
    ap.items = reinterpret_cast<const AttentionWorkItem*>(d + a.layout.items);
    ap.combines = reinterpret_cast<const AttentionCombineItem*>(d + a.layout.combines);
    ap.mma_items = reinterpret_cast<const AttentionWorkItem*>(d + a.layout.mma_items);
    ap.num_mma_items = a.num_mma_items;
    ap.partial_out = partial_out_;
    ap.partial_ml = partial_ml_;
    ap.num_items = a.num_items;
    ap.num_combines = a.num_combines;
    ap.num_heads = c.num_heads;
    ap.num_kv_heads = c.num_kv_heads;
    ap.head_dim = c.head_dim;
    ap.block_size = kv_.block_size;
    ap.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    ap.decode = a.decode;
    if (a.decode_splits > 1) {
      ap.combine_counters = combine_counters_;
      ap.decode_splits = a.decode_splits;
    }
    TANDEM_CUDA_RETURN(launch_attention(ap, stream_, launch_), device_);
    mark(kAttention);
    TANDEM_RETURN_IF_ERROR(gemm(attn_out_, n, q_size, w.o_proj, hidden, delta_, false));
    mark(kOGemm);
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, delta_, w.post_norm, normed_, nullptr, n, hidden, c.rms_norm_eps,
                                           true, stream_, launch_),
                       device_);
    mark(kNorm);
    TANDEM_RETURN_IF_ERROR(gemm(normed_, n, hidden, w.gate_up, 2 * inter, gate_up_, false));
    mark(kGateUpGemm);
    if (use_skinny_ && skinny_gemm_supported(n, inter, gate_up_, w.down) && skinny_gemm_preferred(n, inter, hidden)) {
      // Few tokens: the activation is computed as the down projection loads its input (one launch).
      TANDEM_CUDA_RETURN(launch_skinny_gemm_silu(gate_up_, n, inter, w.down, hidden, delta_, false, skinny_ws_,
                                                 num_sms_, stream_, launch_),
                         device_);
    } else {
      TANDEM_CUDA_RETURN(launch_silu_and_mul(gate_up_, act_, n, inter, stream_, launch_), device_);
      TANDEM_RETURN_IF_ERROR(gemm(act_, n, inter, w.down, hidden, delta_, false));
    }
    mark(kDownGemm);
  }
  if (a.num_logits > 0) {
    // Only the rows that need logits: the last MLP output is added on the fly, the residual left alone.
    TANDEM_CUDA_RETURN(launch_add_rms_norm(residual_, delta_, final_norm_, normed_, d_rows, a.num_logits, hidden,
                                           c.rms_norm_eps, false, stream_, launch_),
                       device_);
    TANDEM_RETURN_IF_ERROR(gemm(normed_, a.num_logits, hidden, lm_head_, c.vocab_size, logits_dev_, true));
    mark(kLmHead);
  }
  return Status::Ok();
}

void CudaBackend::fill_slots(const ForwardBatch& b) {
  slots_.resize(b.num_tokens());
  for (int s = 0; s < b.num_seqs(); ++s) {
    const int32_t* table = b.block_tables.data() + static_cast<size_t>(s) * b.max_blocks_per_seq;
    for (int t = b.query_starts[s]; t < b.query_starts[s + 1]; ++t) {
      const int pos = b.positions[t];
      slots_[t] = table[pos / kv_.block_size] * kv_.block_size + pos % kv_.block_size;
    }
  }
}

Status CudaBackend::run_forward(const ForwardBatch& b, std::span<float> logits) {
  const int n = b.num_tokens(), num_seqs = b.num_seqs(), num_logits = b.num_logits();
  TANDEM_RETURN_IF_ERROR(ensure_workspace(n, num_logits));
  fill_slots(b);
  bool one_token_each = n == num_seqs && num_logits <= num_seqs && num_seqs <= kGraphBuckets.back();
  for (int i = 0; one_token_each && i <= num_seqs; ++i) one_token_each = b.query_starts[i] == i;
  if (graphs_enabled_ && one_token_each) {
    return run_decode_graph(b, logits);
  }
  const AttentionPlan plan = plan_attention(b.query_starts.data(), b.context_lens.data(), num_seqs, config_.num_heads,
                                            config_.num_kv_heads, 2 * num_sms_, kMaxPartials, use_mma_);

  // Pack the metadata into one pinned buffer and upload it in one copy.
  const StepLayout layout =
      layout_step(n, b.block_tables.size(), num_logits, plan.items.size(), plan.combines.size(), plan.mma_items.size());
  TANDEM_RETURN_IF_ERROR(ensure_metadata(layout.total));
  std::byte* h = metadata_host_;
  std::memcpy(h + layout.ids, b.token_ids.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.positions, b.positions.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.slots, slots_.data(), sizeof(int32_t) * n);
  std::memcpy(h + layout.tables, b.block_tables.data(), sizeof(int32_t) * b.block_tables.size());
  std::memcpy(h + layout.rows, b.logits_indices.data(), sizeof(int32_t) * num_logits);
  std::memcpy(h + layout.items, plan.items.data(), sizeof(AttentionWorkItem) * plan.items.size());
  std::memcpy(h + layout.combines, plan.combines.data(), sizeof(AttentionCombineItem) * plan.combines.size());
  std::memcpy(h + layout.mma_items, plan.mma_items.data(), sizeof(AttentionWorkItem) * plan.mma_items.size());
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(metadata_dev_, metadata_host_, layout.total, cudaMemcpyHostToDevice, stream_), device_);
  StepArgs args;
  args.metadata = metadata_dev_;
  args.layout = layout;
  args.num_tokens = n;
  args.num_logits = num_logits;
  args.max_blocks_per_seq = b.max_blocks_per_seq;
  args.num_items = static_cast<int>(plan.items.size());
  args.num_combines = static_cast<int>(plan.combines.size());
  args.num_mma_items = static_cast<int>(plan.mma_items.size());
  args.decode = plan.decode;
  TANDEM_RETURN_IF_ERROR(enqueue_step(args));
  return finish_step(logits);
}

Status CudaBackend::finish_step(std::span<float> logits) {
  if (!greedy_tokens_.empty()) {
    const int rows = static_cast<int>(greedy_tokens_.size());
    if (sampling_) {
      TANDEM_CUDA_RETURN(cudaMemcpyAsync(sample_dev_, sample_host_, sample_upload_bytes_, cudaMemcpyHostToDevice, stream_), device_);
      const auto* rows_dev = reinterpret_cast<const RowSampling*>(sample_dev_);
      const auto* edits_dev = reinterpret_cast<const LogitEdit*>(sample_dev_ + sizeof(RowSampling) * rows);
      auto* logprobs_dev = sample_logprobs_.empty() ? nullptr : reinterpret_cast<RowLogprobs*>(sample_dev_ + sample_logprobs_offset_);
      TANDEM_CUDA_RETURN(launch_sample_rows(logits_dev_, rows_dev, edits_dev, greedy_dev_, logprobs_dev, rows,
                                            config_.vocab_size, stream_, launch_),
                         device_);
      if (logprobs_dev != nullptr) {
        TANDEM_CUDA_RETURN(cudaMemcpyAsync(sample_host_ + sample_logprobs_offset_, logprobs_dev, sample_logprobs_.size_bytes(),
                                           cudaMemcpyDeviceToHost, stream_),
                           device_);
      }
    } else {
      TANDEM_CUDA_RETURN(launch_argmax(logits_dev_, greedy_dev_, rows, config_.vocab_size, stream_, launch_), device_);
    }
    mark(kArgmax);
    TANDEM_CUDA_RETURN(cudaMemcpyAsync(greedy_tokens_.data(), greedy_dev_, greedy_tokens_.size_bytes(), cudaMemcpyDeviceToHost,
                                       stream_),
                       device_);
  } else if (!logits.empty()) {
    TANDEM_CUDA_RETURN(cudaMemcpyAsync(logits.data(), logits_dev_, logits.size_bytes(), cudaMemcpyDeviceToHost, stream_),
                       device_);
  }
  const bool timed = step_timing_.in_step;
  if (timed) TANDEM_CUDA_RETURN(cudaEventRecord(step_timing_.done, stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  if (timed) end_step_timing();
  // Only a graph step followed directly by another one measures the engine's gap between them.
  step_timing_.returned_valid = timed;
  if (timed) step_timing_.returned = std::chrono::steady_clock::now();
  if (sampling_ && !sample_logprobs_.empty()) {
    std::memcpy(sample_logprobs_.data(), sample_host_ + sample_logprobs_offset_, sample_logprobs_.size_bytes());
  }
  if (profile_.enabled) collect_profile();
  return Status::Ok();
}

void CudaBackend::mark(Part part) {
  if (!profile_.enabled) return;
  cudaEvent_t e = nullptr;
  if (!profile_.pool.empty()) {
    e = profile_.pool.back();
    profile_.pool.pop_back();
  } else if (cudaEventCreate(&e) != cudaSuccess) {
    return;
  }
  cudaEventRecord(e, stream_);
  if (part == kNumParts) {
    if (profile_.start) profile_.pool.push_back(profile_.start);
    profile_.start = e;
  } else {
    profile_.marks.emplace_back(part, e);
  }
}

void CudaBackend::collect_profile() {
  if (!profile_.start) return;
  const int phase = profile_.decode ? 1 : 0;
  cudaEvent_t prev = profile_.start;
  for (auto& [part, e] : profile_.marks) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, prev, e) == cudaSuccess) profile_.ms[phase][part] += ms;
    prev = e;
  }
  ++profile_.steps[phase];
  for (auto& [part, e] : profile_.marks) profile_.pool.push_back(e);
  profile_.marks.clear();
}

void CudaBackend::log_profile() {
  static const char* const kNames[kNumParts] = {"embedding", "rms_norm(+residual)", "qkv_proj", "qkv_rope_kv_write",
                                                "attention(+merge)", "o_proj", "gate_up_proj", "down_proj(+silu)",
                                                "lm_head(+final norm)", "argmax"};
  for (int phase = 0; phase < 2; ++phase) {
    if (profile_.steps[phase] == 0) continue;
    double total = 0;
    for (double v : profile_.ms[phase]) total += v;
    for (int part = 0; part < kNumParts; ++part) {
      char line[256];
      std::snprintf(line, sizeof(line), "cuda profile: phase=%s steps=%lld part=%s us_per_step=%.1f share=%.1f%%",
                    phase ? "decode" : "prefill", static_cast<long long>(profile_.steps[phase]), kNames[part],
                    1000.0 * profile_.ms[phase][part] / profile_.steps[phase], 100.0 * profile_.ms[phase][part] / total);
      log_info(line);
    }
  }
  for (cudaEvent_t e : profile_.pool) cudaEventDestroy(e);
  if (profile_.start) cudaEventDestroy(profile_.start);
}

// A decode step through a CUDA graph captured for (batch bucket, block-table width bucket): the step's
// metadata is padded to the bucket (padding tokens write their K/V into the hidden scratch block and
// have no attention rows) and copied into the graph's own metadata buffer before each replay.
Status CudaBackend::run_decode_graph(const ForwardBatch& b, std::span<float> logits) {
  const int num_seqs = b.num_seqs(), num_logits = b.num_logits();
  int bucket = kGraphBuckets.back();
  for (int size : kGraphBuckets) {
    if (size >= num_seqs) {
      bucket = size;
      break;
    }
  }
  int width = kGraphMinWidth;
  while (width < b.max_blocks_per_seq) width *= 2;
  TANDEM_RETURN_IF_ERROR(ensure_workspace(bucket, bucket));
  DecodeGraph* graph = nullptr;
  for (auto& g : graphs_) {
    if (g.bucket == bucket && g.width == width) graph = &g;
  }

  const auto& c = config_;
  const int group = c.num_heads / c.num_kv_heads;
  const int tiles = bucket * c.num_kv_heads * ((group + kAttentionRows - 1) / kAttentionRows);
  // The most splits a tile may use (aiming at 4 blocks an SM); each step's plan uses fewer for short
  // contexts (at least kMinSplitKeys keys each), so the captured grid covers long contexts without costing
  // short ones, and the last split of a tile to finish merges it (no combine kernel).
  constexpr int kMinSplitKeys = 32;
  const int target_blocks = 4 * num_sms_;
  int splits = std::clamp((target_blocks + tiles - 1) / tiles, 1, 32);
  if (splits > 1 && tiles * splits > kMaxPartials) splits = std::max(1, kMaxPartials / tiles);
  if (graph) splits = graph->splits;
  const AttentionPlan plan = plan_decode_attention(b.context_lens.data(), num_seqs, bucket, c.num_heads, c.num_kv_heads,
                                                   splits, kMinSplitKeys);
  const StepLayout layout = layout_step(bucket, static_cast<size_t>(bucket) * width, bucket, plan.items.size(),
                                        plan.combines.size());
  TANDEM_RETURN_IF_ERROR(ensure_metadata(layout.total));

  std::byte* h = metadata_host_;
  auto* ids = reinterpret_cast<int32_t*>(h + layout.ids);
  auto* positions = reinterpret_cast<int32_t*>(h + layout.positions);
  auto* slots = reinterpret_cast<int32_t*>(h + layout.slots);
  auto* tables = reinterpret_cast<int32_t*>(h + layout.tables);
  auto* rows = reinterpret_cast<int32_t*>(h + layout.rows);
  const int scratch_slot = kv_.num_blocks * kv_.block_size;  // the hidden block past the engine's blocks
  for (int s = 0; s < bucket; ++s) {
    const bool real = s < num_seqs;
    ids[s] = real ? b.token_ids[s] : 0;
    positions[s] = real ? b.positions[s] : 0;
    slots[s] = real ? slots_[s] : scratch_slot;
    rows[s] = s < num_logits ? b.logits_indices[s] : s;
    int32_t* row = tables + static_cast<size_t>(s) * width;
    for (int k = 0; k < width; ++k) {
      row[k] = real && k < b.max_blocks_per_seq ? b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + k] : -1;
    }
  }
  std::memcpy(h + layout.items, plan.items.data(), sizeof(AttentionWorkItem) * plan.items.size());
  std::memcpy(h + layout.combines, plan.combines.data(), sizeof(AttentionCombineItem) * plan.combines.size());

  bool captured_now = false;
  if (!graph) {
    DecodeGraph g;
    g.bucket = bucket;
    g.width = width;
    g.splits = splits;
    g.metadata_bytes = layout.total;
    TANDEM_CUDA_RETURN(cudaMalloc(&g.metadata, layout.total), device_);
    StepArgs args;
    args.metadata = g.metadata;
    args.layout = layout;
    args.num_tokens = bucket;
    args.num_logits = bucket;
    args.max_blocks_per_seq = width;
    args.num_items = static_cast<int>(plan.items.size());
    args.num_combines = static_cast<int>(plan.combines.size());
    args.decode = true;
    args.decode_splits = splits > 1 ? splits : 0;
    cudaGraph_t captured = nullptr;
    TANDEM_CUDA_RETURN(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), device_);
    Status enqueued = enqueue_step(args);
    cudaError_t end = cudaStreamEndCapture(stream_, &captured);
    if (enqueued.ok() && end == cudaSuccess) end = cudaGraphInstantiate(&g.exec, captured, 0);
    if (captured) cudaGraphDestroy(captured);
    if (!enqueued.ok() || end != cudaSuccess) {
      cudaFree(g.metadata);
      cudaGetLastError();
      graphs_enabled_ = false;  // run eagerly from now on
      log_error("cuda backend: capturing a decode graph failed on cuda:" + std::to_string(device_) + " (" +
                (enqueued.ok() ? std::string(cudaGetErrorString(end)) : enqueued.message()) +
                "); decode steps run without CUDA graphs");
      return run_forward(b, logits);
    }
    captured_now = true;
    log_info("cuda backend: captured decode graph batch_bucket=" + std::to_string(bucket) +
             " block_table_width=" + std::to_string(width) + " kv_splits=" + std::to_string(splits));
    graphs_.push_back(g);
    graph = &graphs_.back();
  }
  // A step that captured its graph is not timed: its host work is the capture.
  if (step_timing_.enabled && !captured_now) {
    auto& t = step_timing_;
    if (!t.upload) {
      TANDEM_CUDA_RETURN(cudaEventCreate(&t.upload), device_);
      TANDEM_CUDA_RETURN(cudaEventCreate(&t.done), device_);
    }
    const auto now = std::chrono::steady_clock::now();
    t.host_prep_us += std::chrono::duration<double, std::micro>(now - t.entered).count();
    if (t.returned_valid) {
      t.engine_gap_us += std::chrono::duration<double, std::micro>(t.entered - t.returned).count();
      ++t.gaps;
    }
    TANDEM_CUDA_RETURN(cudaEventRecord(t.upload, stream_), device_);
    t.in_step = true;
  }
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(graph->metadata, metadata_host_, layout.total, cudaMemcpyHostToDevice, stream_), device_);
  TANDEM_CUDA_RETURN(cudaGraphLaunch(graph->exec, stream_), device_);
  return finish_step(logits);
}

void CudaBackend::end_step_timing() {
  auto& t = step_timing_;
  float ms = 0;
  if (cudaEventElapsedTime(&ms, t.upload, t.done) == cudaSuccess) {
    t.gpu_us += 1000.0 * ms;
    ++t.steps;
  } else {
    cudaGetLastError();
  }
  t.in_step = false;
}

void CudaBackend::log_step_timing() {
  auto& t = step_timing_;
  if (t.upload) cudaEventDestroy(t.upload);
  if (t.done) cudaEventDestroy(t.done);
  t.upload = t.done = nullptr;
  if (t.steps == 0) return;
  const double prep = t.host_prep_us / t.steps, gpu = t.gpu_us / t.steps;
  const double gap = t.gaps > 0 ? t.engine_gap_us / t.gaps : 0.0;
  char line[320];
  std::snprintf(line, sizeof(line),
                "cuda step timing: graph_decode_steps=%lld host_prep_us=%.1f gpu_us=%.1f engine_gap_us=%.1f "
                "step_us=%.1f gpu_busy=%.1f%%",
                static_cast<long long>(t.steps), prep, gpu, gap, prep + gpu + gap, 100.0 * gpu / (prep + gpu + gap));
  log_info(line);
}

void CudaBackend::clear_graphs() {
  for (auto& g : graphs_) {
    cudaGraphExecDestroy(g.exec);
    cudaFree(g.metadata);
  }
  graphs_.clear();
}

Status CudaBackend::read_kv_block(int layer, int block, std::span<std::byte> out) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (out.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  const bf16* src = layer_pool(layer) + static_cast<size_t>(block) * kv_.block_elements();
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(out.data(), src, out.size(), cudaMemcpyDeviceToHost, stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  return Status::Ok();
}

Status CudaBackend::write_kv_block(int layer, int block, std::span<const std::byte> in) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (in.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  bf16* dst = layer_pool(layer) + static_cast<size_t>(block) * kv_.block_elements();
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(dst, in.data(), in.size(), cudaMemcpyHostToDevice, stream_), device_);
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(stream_), device_);
  return Status::Ok();
}

StatusOr<KvExport> CudaBackend::export_kv_handles() {
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  cudaIpcMemHandle_t handle;
  TANDEM_CUDA_RETURN(cudaIpcGetMemHandle(&handle, kv_pool_), device_);
  KvExport out;
  out.device = device_name();
  out.device_ordinal = device_;
  char bus_id[32] = {};
  TANDEM_CUDA_RETURN(cudaDeviceGetPCIBusId(bus_id, sizeof(bus_id), device_), device_);
  out.pci_bus_id = bus_id;
  out.process_id = static_cast<int64_t>(getpid());
  out.spec = kv_;
  out.layer_stride_bytes = layer_pool_elements_ * sizeof(bf16);
  const auto* bytes = reinterpret_cast<const std::byte*>(&handle);
  out.handle.assign(bytes, bytes + sizeof(handle));
  return out;
}

Status CudaBackend::copy_with_peer(const KvExport& peer, std::span<const int32_t> peer_blocks,
                                   std::span<const int32_t> local_blocks, int layer_begin, int layer_end, bool from_peer) {
  const KvCacheSpec& ps = peer.spec;
  if (ps.num_layers != kv_.num_layers || ps.block_size != kv_.block_size || ps.num_kv_heads != kv_.num_kv_heads ||
      ps.head_dim != kv_.head_dim || ps.dtype != kv_.dtype) {
    return Status::InvalidArgument("peer " + peer.device + " has a different KV geometry");
  }
  if (peer.handle.size() != sizeof(cudaIpcMemHandle_t)) return Status::InvalidArgument("peer KV handle has the wrong size");
  if (peer_blocks.size() != local_blocks.size()) return Status::InvalidArgument("peer and local block lists differ in length");
  if (layer_end < 0) layer_end = kv_.num_layers;
  if (layer_begin < 0 || layer_begin >= layer_end || layer_end > kv_.num_layers) return Status::InvalidArgument("layer range out of bounds");
  for (size_t i = 0; i < local_blocks.size(); ++i) {
    if (local_blocks[i] < 0 || local_blocks[i] >= kv_.num_blocks || peer_blocks[i] < 0 || peer_blocks[i] >= ps.num_blocks) {
      return Status::InvalidArgument("KV block id out of range in a peer copy");
    }
  }
  if (peer.process_id == static_cast<int64_t>(getpid())) {
    return Status::Unavailable("a CUDA IPC handle cannot be opened in the process that exported it");
  }
  if (local_blocks.empty()) return Status::Ok();
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  std::lock_guard<std::mutex> lock(peer_mu_);
  if (!peer_stream_) TANDEM_CUDA_RETURN(cudaStreamCreateWithFlags(&peer_stream_, cudaStreamNonBlocking), device_);
  const std::string key(reinterpret_cast<const char*>(peer.handle.data()), peer.handle.size());
  auto it = peer_pools_.find(key);
  if (it == peer_pools_.end()) {
    cudaIpcMemHandle_t handle;
    std::memcpy(&handle, peer.handle.data(), sizeof(handle));
    void* ptr = nullptr;
    cudaError_t err = cudaIpcOpenMemHandle(&ptr, handle, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return Status::Unavailable(cuda_failure("cudaIpcOpenMemHandle", device_, err) + " (peer " + peer.device + " pid " +
                                 std::to_string(peer.process_id) + ")");
    }
    it = peer_pools_.emplace(key, ptr).first;
  }
  // Block ids to the device in one copy: [peer ids][local ids].
  const size_t n = local_blocks.size();
  if (2 * n > peer_ids_capacity_) {
    const size_t capacity = std::max<size_t>(2 * n, 4096);
    cudaFreeHost(peer_ids_host_);
    cudaFree(peer_ids_dev_);
    peer_ids_host_ = nullptr;
    peer_ids_dev_ = nullptr;
    peer_ids_capacity_ = 0;
    TANDEM_CUDA_RETURN(cudaMallocHost(&peer_ids_host_, capacity * sizeof(int32_t)), device_);
    TANDEM_CUDA_RETURN(cudaMalloc(&peer_ids_dev_, capacity * sizeof(int32_t)), device_);
    peer_ids_capacity_ = capacity;
  }
  std::memcpy(peer_ids_host_, peer_blocks.data(), n * sizeof(int32_t));
  std::memcpy(peer_ids_host_ + n, local_blocks.data(), n * sizeof(int32_t));
  TANDEM_CUDA_RETURN(cudaMemcpyAsync(peer_ids_dev_, peer_ids_host_, 2 * n * sizeof(int32_t), cudaMemcpyHostToDevice, peer_stream_),
                     device_);
  const int32_t* peer_ids = peer_ids_dev_;
  const int32_t* local_ids = peer_ids_dev_ + n;
  std::byte* peer_base = static_cast<std::byte*>(it->second) + layer_begin * peer.layer_stride_bytes;
  const size_t local_stride = layer_pool_elements_ * sizeof(bf16);
  std::byte* local_base = reinterpret_cast<std::byte*>(kv_pool_) + layer_begin * local_stride;
  const int layers = layer_end - layer_begin;
  if (from_peer) {
    TANDEM_CUDA_RETURN(
        launch_copy_kv_blocks(peer_base, peer.layer_stride_bytes, local_base, local_stride, kv_.block_bytes(), peer_ids,
                              local_ids, static_cast<int>(n), layers, peer_stream_, launch_),
        device_);
  } else {
    TANDEM_CUDA_RETURN(
        launch_copy_kv_blocks(local_base, local_stride, peer_base, peer.layer_stride_bytes, kv_.block_bytes(),
                              local_ids, peer_ids, static_cast<int>(n), layers, peer_stream_, launch_),
        device_);
  }
  TANDEM_CUDA_RETURN(cudaStreamSynchronize(peer_stream_), device_);
  return Status::Ok();
}

bool CudaBackend::can_reach_peer(const KvExport& peer) {
  if (peer.handle.size() != sizeof(cudaIpcMemHandle_t)) return false;
  int ordinal = -1;
  if (peer.pci_bus_id.empty() || cudaDeviceGetByPCIBusId(&ordinal, peer.pci_bus_id.c_str()) != cudaSuccess) {
    cudaGetLastError();
    return false;  // the exporter's GPU is not visible here
  }
  if (ordinal == device_) return true;
  int can = 0;
  if (cudaDeviceCanAccessPeer(&can, device_, ordinal) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return can != 0;
}

}  // namespace

std::unique_ptr<Backend> create_cuda_backend(const model::WeightSource& weights, const BackendOptions& options) {
  return std::make_unique<CudaBackend>(weights, options);
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace tandem::backend::cuda
