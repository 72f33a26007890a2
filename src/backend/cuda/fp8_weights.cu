// CudaBackend (cuda_backend_impl.cuh): FP8 projection weights, loaded and multiplied (docs/quantization.md).
// Loading streams one fused projection at a time through two pinned staging buffers, so the host never
// holds more than two projections: an FP8 checkpoint's bytes and scales are copied up as stored (per-tensor
// scales expanded to one per row); a bf16 checkpoint or random:<preset> with --quantization fp8 is read
// as bf16 and quantized per output row on the GPU (launch_quantize_rows_fp8, the arithmetic of
// model::quantize_fp8).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/cuda_log.h"
#include "backend/cuda/fp8_gemm.cuh"
#include "backend/cuda/kernels.cuh"
#include "common/error.h"

namespace tandem::backend::cuda {
namespace {

using model::DType;
using model::Fp8Scheme;
using model::TensorSpec;

double gib(size_t bytes) { return static_cast<double>(bytes) / (1ull << 30); }

// One device Fp8Linear and the checkpoint tensors fused into it (q/k/v, gate/up), with its place in the arena.
struct Group {
  Fp8Linear* dst = nullptr;
  std::vector<const TensorSpec*> parts;
  Fp8Linear layout;  // rows, cols and the scale layout; pointers set once the arena exists
  size_t num_scales = 0;
  size_t values_offset = 0;
  size_t scales_offset = 0;
};

}  // namespace

void CudaBackend::load_fp8_weights(const model::WeightSource& weights) {
  const auto& c = config_;
  const model::QuantizationConfig& q = c.quantization;
  const bool online = q.method == model::QuantizationConfig::Method::kOnlineFp8;
  const bool block = !online && q.weight_scheme == Fp8Scheme::kBlock;
  const std::vector<TensorSpec> specs = model::expected_tensors(c);
  auto find = [&](const std::string& name) -> const TensorSpec& {
    for (const auto& s : specs) {
      if (s.name == name) return s;
    }
    throw Error("cuda backend: the model has no tensor " + name);
  };

  std::vector<Group> groups;
  auto add = [&](Fp8Linear* dst, const std::vector<std::string>& names) {
    Group g;
    g.dst = dst;
    int rows = 0;
    bool block_aligned = true;
    for (const auto& n : names) {
      const TensorSpec& s = find(n);
      g.parts.push_back(&s);
      const int part_rows = static_cast<int>(s.shape[0]), cols = static_cast<int>(s.shape[1]);
      if (cols % 16 != 0) {
        throw Error("cuda backend: " + weights.describe() + ": " + n + " has " + std::to_string(cols) +
                    " input columns; FP8 on CUDA needs a multiple of 16 (use --device cpu)");
      }
      if (g.layout.cols != 0 && g.layout.cols != cols) throw Error("cuda backend: fused projections differ in width at " + n);
      g.layout.cols = cols;
      rows += part_rows;
      if (block && part_rows % q.block_rows != 0) block_aligned = false;
    }
    g.layout.rows = rows;
    if (block) {
      if (q.block_cols % 16 != 0) {
        throw Error("cuda backend: FP8 block width " + std::to_string(q.block_cols) + " is not a multiple of 16");
      }
      // A fused part that does not start on a block boundary gets one scale per row and column block.
      g.layout.block_rows = block_aligned ? q.block_rows : 1;
      g.layout.block_cols = q.block_cols;
      g.layout.scale_cols = (g.layout.cols + q.block_cols - 1) / q.block_cols;
      g.num_scales = static_cast<size_t>((rows + g.layout.block_rows - 1) / g.layout.block_rows) * g.layout.scale_cols;
    } else {
      g.num_scales = static_cast<size_t>(rows);
    }
    groups.push_back(std::move(g));
  };
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    add(&w.qkv8, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"});
    add(&w.o8, {p + "self_attn.o_proj.weight"});
    add(&w.gate_up8, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"});
    add(&w.down8, {p + "mlp.down_proj.weight"});
  }

  size_t total = 0, largest_elements = 0, largest_staging = 0;
  for (Group& g : groups) {
    const size_t elements = static_cast<size_t>(g.layout.rows) * g.layout.cols;
    g.values_offset = total;
    total += align_up(elements);
    g.scales_offset = total;
    total += align_up(g.num_scales * sizeof(float));
    largest_elements = std::max(largest_elements, elements);
    largest_staging = std::max(largest_staging, online ? elements * sizeof(bf16) : align_up(elements) + g.num_scales * sizeof(float));
  }
  // The bf16 scratch: where online quantization uploads a projection before quantizing it, and later the
  // dequantizing GEMM path's tile (the largest projection as bf16).
  const size_t scratch_bytes = largest_elements * sizeof(bf16);
  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_THROW(cudaMemGetInfo(&free_bytes, &total_bytes), device_);
  if (total + scratch_bytes > free_bytes) {
    throw Error("cuda:" + std::to_string(device_) + ": the FP8 weights of " + weights.describe() + " need " +
                std::to_string(gib(total + scratch_bytes)) + " GiB but only " + std::to_string(gib(free_bytes)) + " GiB of " +
                std::to_string(gib(total_bytes)) + " GiB is free after the bf16 tensors; free the GPU");
  }
  TANDEM_CUDA_THROW(cudaMalloc(&fp8_arena_, total), device_);
  TANDEM_CUDA_THROW(cudaMalloc(&fp8_dequant_, scratch_bytes), device_);
  for (Group& g : groups) {
    g.layout.values = static_cast<const uint8_t*>(fp8_arena_) + g.values_offset;
    g.layout.scales = reinterpret_cast<const float*>(static_cast<const std::byte*>(fp8_arena_) + g.scales_offset);
    *g.dst = g.layout;
  }

  std::byte* staging[2] = {nullptr, nullptr};  // [largest_staging] bytes each, pinned host
  cudaEvent_t uploaded[2] = {nullptr, nullptr};
  auto cleanup = [&]() {
    for (int i = 0; i < 2; ++i) {
      if (uploaded[i]) cudaEventDestroy(uploaded[i]);
      if (staging[i]) cudaFreeHost(staging[i]);
    }
  };
  try {
    for (int i = 0; i < 2; ++i) {
      TANDEM_CUDA_THROW(cudaHostAlloc(&staging[i], largest_staging, cudaHostAllocDefault), device_);
      TANDEM_CUDA_THROW(cudaEventCreateWithFlags(&uploaded[i], cudaEventDisableTiming), device_);
    }
    for (size_t i = 0; i < groups.size(); ++i) {
      const Group& g = groups[i];
      const Fp8Linear& d = g.layout;
      const int slot = static_cast<int>(i % 2);
      TANDEM_CUDA_THROW(cudaEventSynchronize(uploaded[slot]), device_);  // its previous upload is done
      std::byte* host = staging[slot];
      const size_t elements = static_cast<size_t>(d.rows) * d.cols;
      if (online) {
        size_t offset = 0;
        for (const TensorSpec* part : g.parts) {
          weights.read(*part, DType::kBF16, host + offset);
          offset += static_cast<size_t>(model::num_elements(part->shape)) * sizeof(bf16);
        }
        // Stream-ordered: the previous group's quantization has read the scratch before this copy lands.
        TANDEM_CUDA_THROW(cudaMemcpyAsync(fp8_dequant_, host, elements * sizeof(bf16), cudaMemcpyHostToDevice, stream_),
                          device_);
        TANDEM_CUDA_THROW(launch_quantize_rows_fp8(fp8_dequant_, d.rows, d.cols, d.cols, const_cast<uint8_t*>(d.values),
                                                   const_cast<float*>(d.scales), stream_, launch_),
                          device_);
      } else {
        float* scales = reinterpret_cast<float*>(host + align_up(elements));
        int row0 = 0;
        for (const TensorSpec* part : g.parts) {
          std::optional<model::QuantizedWeight> qw = weights.read_quantized(*part);
          if (!qw) {
            throw Error("cuda backend: " + weights.describe() + ": " + part->name +
                        " is stored unquantized in an FP8 checkpoint; FP8 on CUDA needs every q/k/v/o/gate/up/down "
                        "projection in FP8 (use --device cpu)");
          }
          const int part_rows = static_cast<int>(qw->rows());
          if (qw->values.size() != static_cast<size_t>(part_rows) * d.cols || qw->scales.size() != qw->expected_scales()) {
            throw Error("cuda backend: " + weights.describe() + ": " + part->name + " has a misshapen FP8 payload");
          }
          std::memcpy(host + static_cast<size_t>(row0) * d.cols, qw->values.data(), qw->values.size());
          switch (qw->scheme) {
            case Fp8Scheme::kTensor:
              std::fill(scales + row0, scales + row0 + part_rows, qw->scales[0]);
              break;
            case Fp8Scheme::kChannel:
              std::copy(qw->scales.begin(), qw->scales.end(), scales + row0);
              break;
            case Fp8Scheme::kBlock:
              if (qw->block_cols != d.block_cols) throw Error("cuda backend: " + part->name + ": unexpected FP8 block width");
              if (d.block_rows == qw->block_rows) {
                std::copy(qw->scales.begin(), qw->scales.end(), scales + static_cast<size_t>(row0 / d.block_rows) * d.scale_cols);
              } else {
                for (int r = 0; r < part_rows; ++r) {
                  for (int kb = 0; kb < d.scale_cols; ++kb) {
                    scales[static_cast<size_t>(row0 + r) * d.scale_cols + kb] =
                        qw->scales[static_cast<size_t>(r / qw->block_rows) * d.scale_cols + kb];
                  }
                }
              }
              break;
          }
          row0 += part_rows;
        }
        TANDEM_CUDA_THROW(cudaMemcpyAsync(const_cast<uint8_t*>(d.values), host, elements, cudaMemcpyHostToDevice, stream_),
                          device_);
        TANDEM_CUDA_THROW(cudaMemcpyAsync(const_cast<float*>(d.scales), scales, g.num_scales * sizeof(float),
                                          cudaMemcpyHostToDevice, stream_),
                          device_);
      }
      TANDEM_CUDA_THROW(cudaEventRecord(uploaded[slot], stream_), device_);
    }
    TANDEM_CUDA_THROW(cudaStreamSynchronize(stream_), device_);
  } catch (...) {
    cudaStreamSynchronize(stream_);
    cleanup();
    throw;
  }
  cleanup();

  const char* mode = std::getenv("TANDEM_FP8_GEMM");
  fp8_use_lt_ = !(mode && std::string(mode) == "dequantize") && !block;
  const int probe_rows = 64;
  if (fp8_use_lt_ && !fp8_gemm_->supports(probe_rows, c.hidden_size, layers_[0].qkv8.rows)) fp8_use_lt_ = false;
  char line[512];
  std::snprintf(line, sizeof(line),
                "cuda backend: fp8 weights (%s): projections_gib=%.2f gemv_rows<=%d gemm=%s",
                q.describe().c_str(), gib(total), kFp8GemvMaxRows,
                fp8_use_lt_ ? "cublaslt-fp8-outer-vector" : "dequantize-bf16");
  log_info(line);
}

Status CudaBackend::fp8_linear(const bf16* x, int rows, const Fp8Linear& w, void* y, bool silu_in) {
  if (fp8_gemv_supported(rows, w, x)) {
    TANDEM_CUDA_RETURN(
        launch_fp8_gemv(x, rows, w, y, false, silu_in, skinny_ws_, num_sms_, stream_, launch_), device_);
    return Status::Ok();
  }
  if (silu_in) {
    TANDEM_CUDA_RETURN(launch_silu_and_mul(x, act_, rows, w.cols, stream_, launch_), device_);
    x = act_;
  }
  if (fp8_use_lt_ && w.per_row() && fp8_gemm_->supports(rows, w.cols, w.rows)) {
    TANDEM_CUDA_RETURN(launch_quantize_rows_fp8(x, rows, w.cols, w.cols, fp8_act_, fp8_act_scales_, stream_, launch_),
                       device_);
    TANDEM_CUBLAS_RETURN(fp8_gemm_->run(fp8_act_, fp8_act_scales_, rows, w, static_cast<bf16*>(y), stream_), device_);
    return Status::Ok();
  }
  // Correct everywhere, at the cost of writing and reading the weight once more in bf16.
  TANDEM_CUDA_RETURN(launch_dequantize_fp8(w, fp8_dequant_, stream_, launch_), device_);
  return gemm(x, rows, w.cols, fp8_dequant_, w.rows, y, false);
}

}  // namespace tandem::backend::cuda
