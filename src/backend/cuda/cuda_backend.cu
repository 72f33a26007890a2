// CudaBackend (cuda_backend_impl.cuh): construction, the weights' upload, the KV pool and activation
// buffers, the GEMM choice, and the forward entry points with their checks and device-failure handling.
#include "backend/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/cuda_log.h"
#include "backend/cuda/sampling.cuh"
#include "backend/cuda/skinny_gemm.cuh"
#include "common/error.h"
#include "parallel/weight_slices.h"

namespace tandem::backend::cuda {
namespace {

using model::DType;
using model::TensorSpec;

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

}  // namespace

CudaBackend::CudaBackend(const model::WeightSource& weights, const BackendOptions& options, const CudaRank* rank)
    : config_(weights.config()), device_(parse_device(options.device)) {
  weights.validate();
  if (rank != nullptr) {
    rank_ = *rank;
    config_.num_heads = rank->plan.q_heads.size();
    config_.num_kv_heads = rank->plan.kv_heads.size();
    config_.intermediate_size = rank->plan.intermediate.size();
    if (!rank->inject_faults) fault_step_ = 0;
  }
  const auto& c = config_;
  // --quantization fp8 on an unquantized model quantizes it here, at load (fp8_weights.cu).
  config_.quantization = model::resolve_quantization_flag(options.quantization, config_.quantization, weights.describe());
  fp8_ = config_.quantization.is_fp8();
  if (fp8_ && rank_ && rank_->plan.world > 1) {
    // fp8_weights.cu loads whole projections; slicing them (values and their row/block scales) is not done yet.
    throw Error("cuda backend: FP8 weights (--quantization fp8 or an FP8 checkpoint) with --tensor-parallel-size " +
                std::to_string(rank_->plan.world) + " are not supported yet; use --tensor-parallel-size 1");
  }
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
  if (fp8_ && prop.major * 10 + prop.minor < 89) {
    throw Error("--device " + options.device + ": FP8 weights need compute capability 8.9 or newer (" + prop.name +
                " is " + std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                "); use a bf16 checkpoint without --quantization fp8, or --device cpu");
  }
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
  if (fp8_) fp8_gemm_ = std::make_unique<Fp8Gemm>(cublas_workspace_, kCublasWorkspaceBytes);
  graphs_enabled_ = options.cuda_graphs && !profile_.enabled();

  kv_.num_layers = c.num_layers;
  kv_.block_size = options.block_size;
  kv_.num_kv_heads = c.num_kv_heads;
  kv_.head_dim = c.head_dim;
  kv_.dtype = resolve_kv_cache_dtype(options.kv_cache_dtype, options.device);

  const auto start = std::chrono::steady_clock::now();
  load_weights(weights);
  if (fp8_) load_fp8_weights(weights);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  throw_if_error(ensure_workspace(kInitialMaxTokens, kInitialMaxLogits));
  allocate_kv_pool(options);
  char line[512];
  std::snprintf(line, sizeof(line),
                "cuda backend: device=cuda:%d gpu=\"%s\" model=%s layers=%d load_seconds=%.2f kv_blocks=%d kv_tokens=%lld "
                "kv_bytes=%zu kv_gib=%.2f kv_cache_dtype=%s",
                device_, prop.name, weights.describe().c_str(), c.num_layers, load_s, kv_.num_blocks,
                static_cast<long long>(kv_.num_blocks) * kv_.block_size, kv_.block_bytes() * kv_.num_blocks * c.num_layers,
                gib(kv_.block_bytes() * kv_.num_blocks * c.num_layers), kv_dtype_name(kv_.dtype).c_str());
  log_info(line);
}

CudaBackend::~CudaBackend() {
  // Destructors do not throw: errors here are logged only.
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  if (profile_.enabled()) profile_.finish();
  if (step_timing_.enabled()) step_timing_.finish();
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
  cudaFree(fp8_arena_);
  cudaFree(fp8_dequant_);
  cudaFree(inv_freq_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::load_weights(const model::WeightSource& weights) {
  const auto& c = config_;
  // The checkpoint's tensors are the whole model's, whatever share of them this backend keeps.
  const std::vector<TensorSpec> specs = model::expected_tensors(weights.config());
  auto find = [&](const std::string& name) -> const TensorSpec& {
    for (const auto& s : specs) {
      if (s.name == name) return s;
    }
    throw Error("cuda backend: the model has no tensor " + name);
  };
  // One upload per device tensor; fused tensors are read part by part into one staging buffer. A
  // tensor-parallel rank keeps a slice of some parts (parallel/weight_slices.h): whole heads' rows of
  // q/k/v, its rows of gate/up and of the lm_head, its columns of o and down.
  struct Upload {
    bf16** dst;
    std::vector<parallel::SlicedTensor> parts;
    size_t bytes = 0;
    size_t offset = 0;  // in the arena
  };
  const std::optional<parallel::ShardPlan> plan = rank_ ? std::optional(rank_->plan) : std::nullopt;
  std::vector<Upload> uploads;
  auto add = [&](bf16** dst, std::vector<std::string> names) {
    Upload u;
    u.dst = dst;
    for (const auto& n : names) {
      u.parts.push_back(parallel::shard_slice(find(n), weights.config(), plan));
      u.bytes += u.parts.back().elements() * sizeof(bf16);
    }
    uploads.push_back(std::move(u));
  };
  add(&embed_, {"model.embed_tokens.weight"});
  layers_.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    add(&w.input_norm, {p + "input_layernorm.weight"});
    if (!fp8_) add(&w.qkv, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"});
    if (c.attention_bias) add(&w.qkv_bias, {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"});
    if (c.qk_norm) {
      add(&w.q_norm, {p + "self_attn.q_norm.weight"});
      add(&w.k_norm, {p + "self_attn.k_norm.weight"});
    }
    if (!fp8_) add(&w.o_proj, {p + "self_attn.o_proj.weight"});
    add(&w.post_norm, {p + "post_attention_layernorm.weight"});
    if (!fp8_) add(&w.gate_up, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    if (!fp8_) add(&w.down, {p + "mlp.down_proj.weight"});
  }
  add(&final_norm_, {"model.norm.weight"});
  // A rank of several keeps its vocabulary rows of the lm_head, tied or not.
  const bool own_head = !c.tie_word_embeddings || (rank_ && rank_->plan.world > 1);
  if (own_head) add(&lm_head_, {c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"});
  if (own_head && c.tie_word_embeddings) uploads.back().parts[0] = parallel::shard_rows(find("model.embed_tokens.weight"), plan->vocab);

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
  if (!own_head) lm_head_ = embed_;

  // Two pinned staging buffers: the host reads (mmap'd checkpoint or generated weights) into one while
  // the copy engine uploads the other.
  std::byte* staging[2] = {nullptr, nullptr};  // [largest] bytes each, pinned host
  std::vector<std::byte> slice_scratch;          // a whole tensor, when only a slice of it is kept
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
      for (const parallel::SlicedTensor& part : uploads[i].parts) {
        parallel::read_slice(weights, part, DType::kBF16, staging[slot] + offset, slice_scratch);
        offset += part.elements() * sizeof(bf16);
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
  layer_pool_bytes_ = static_cast<size_t>(kv_.num_blocks + 1) * kv_.block_bytes();
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
                  static_cast<void*>(partial_ml_), static_cast<void*>(metadata_dev_), static_cast<void*>(fp8_act_),
                  static_cast<void*>(fp8_act_scales_), static_cast<void*>(shard_logits_),
                  static_cast<void*>(gathered_logits_)}) {
    cudaFree(p);
  }
  if (metadata_host_) cudaFreeHost(metadata_host_);
  residual_ = nullptr;
  normed_ = qkv_ = attn_out_ = delta_ = gate_up_ = act_ = nullptr;
  logits_dev_ = partial_out_ = partial_ml_ = shard_logits_ = gathered_logits_ = nullptr;
  greedy_dev_ = nullptr;
  fp8_act_ = nullptr;
  fp8_act_scales_ = nullptr;
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
      // FP8 weights: each token's activations quantized before a cuBLASLt FP8 GEMM (a token when unused).
      {reinterpret_cast<void**>(&fp8_act_),
       (fp8_ ? t : 1) * std::max({c.hidden_size, c.q_size(), c.intermediate_size}) * sizeof(uint8_t)},
      {reinterpret_cast<void**>(&fp8_act_scales_), (fp8_ ? t : 1) * sizeof(float)},
      {reinterpret_cast<void**>(&shard_logits_), rank_ ? static_cast<size_t>(logits) * rank_->plan.vocab_shard * sizeof(float) : 0},
      {reinterpret_cast<void**>(&gathered_logits_),
       rank_ ? static_cast<size_t>(rank_->plan.world) * logits * rank_->plan.vocab_shard * sizeof(float) : 0},
  };
  for (const Want& w : wants) {
    cudaFree(*w.ptr);
    *w.ptr = nullptr;
  }
  for (const Want& w : wants) {
    if (w.bytes == 0) continue;
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
  step_timing_.step_entered();
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
  const size_t mask_words = (static_cast<size_t>(config_.vocab_size) + 31) / 32;
  for (const RowSampling& r : step.rows) {
    if (r.edits_begin < 0 || r.edits_end < r.edits_begin || static_cast<size_t>(r.edits_end) > step.edits.size()) {
      return Status::InvalidArgument("a row's edits are outside the step's edit list");
    }
    if (r.num_logprobs > kMaxTopLogprobs) return Status::InvalidArgument("at most 20 top logprobs");
    if (r.mask_row >= 0 && static_cast<size_t>(r.mask_row + 1) * mask_words > step.masks.size()) {
      return Status::InvalidArgument("a row's mask is outside the step's masks");
    }
    any_logprobs = any_logprobs || r.num_logprobs >= 0;
  }
  if (any_logprobs && step.logprobs.size() != n) return Status::InvalidArgument("logprobs must be [num_logits]");
  if (batch.num_tokens() == 0) return Status::Ok();
  if (!health_.ok()) return health_;
  TANDEM_CUDA_RETURN(cudaSetDevice(device_), device_);
  // One staging buffer, [rows | edits | masks | logprobs], pinned on the host and mirrored on the device;
  // the logprobs come back into the pinned part and are copied out once the step is done (finish_step).
  // The masks are staged in finish_step, once the forward is enqueued (DeviceSamplingStep::await_masks).
  const size_t rows_bytes = sizeof(RowSampling) * n, edits_bytes = sizeof(LogitEdit) * step.edits.size();
  const size_t masks_offset = (rows_bytes + edits_bytes + 15) / 16 * 16;
  const size_t logprobs_offset = (masks_offset + step.masks.size_bytes() + 15) / 16 * 16;
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
  sample_masks_offset_ = masks_offset;
  sample_masks_ = step.masks;
  sample_await_masks_ = step.await_masks;
  sample_logprobs_offset_ = logprobs_offset;
  sample_logprobs_ = any_logprobs ? step.logprobs : std::span<RowLogprobs>{};
  sampling_ = true;
  greedy_tokens_ = step.tokens;
  Status s = run_checked_step(batch, {});
  greedy_tokens_ = {};
  sampling_ = false;
  sample_logprobs_ = {};
  sample_masks_ = {};
  sample_await_masks_ = nullptr;
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

std::unique_ptr<Backend> create_cuda_backend(const model::WeightSource& weights, const BackendOptions& options) {
  if (options.tensor_parallel_size > 1 || options.device.find(',') != std::string::npos) {
    return create_tensor_parallel_cuda_backend(weights, options);
  }
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

