// FP8 (OCP e4m3fn) weights on the GPU and the products that read them (docs/quantization.md):
//  - Fp8Linear: a projection's FP8 bytes and its fp32 scales in one layout that covers per-tensor (expanded
//    to one scale per row at load), per-channel and 128x128-block checkpoints.
//  - launch_fp8_gemv: decode steps of <= kFp8GemvMaxRows tokens. The row-streaming GEMV of skinny_gemm.cu
//    with one byte per weight: each lane reads 16 contiguous bytes (16 weights) of a row per pass, converts
//    them in registers, multiplies by bf16 activations in fp32 and applies the scales; K is split over warps
//    and blocks with the skinny GEMM's workspace. Activations are not quantized (W8A16).
//  - launch_quantize_rows_fp8: one scale per row (amax / 448), values divided by it: dynamic per-token
//    activation quantization before the FP8 GEMM, and online per-channel weight quantization at load
//    (the same arithmetic as model::quantize_fp8, so the CPU reference and the GPU agree bit for bit).
//  - Fp8Gemm: prefill and batched decode through cuBLASLt's FP8 GEMM with outer-vector scales (per-token
//    activations x per-channel weights), where it has an algorithm; launch_dequantize_fp8 +
//    a bf16 GEMM otherwise (128x128 blocks, or no algorithm for a shape).
//
// Thread-safety: launches and an Fp8Gemm belong to one stream; an Fp8Gemm is used by one thread.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/launch_options.h"
#include "backend/cuda/skinny_gemm.cuh"

namespace tandem::backend::cuda {

// Largest number of tokens the FP8 GEMV takes; more go through Fp8Gemm.
constexpr int kFp8GemvMaxRows = 4;
constexpr float kFp8E4m3Max = 448.0f;

// One FP8 projection on the device: w[r, c] = e4m3(values[r * cols + c]) * scale(r, c) with
//   scale(r, c) = scales[(r / block_rows) * scale_cols + (block_cols > 0 ? c / block_cols : 0)].
// Per-row (per-channel, per-tensor, online): block_rows 1, block_cols 0, scale_cols 1.
// Block checkpoints: block_rows 128 and block_cols 128, or block_rows 1 (one scale per row and 128-column
// block) when fused parts do not start on a 128-row boundary. Pointers into the backend's FP8 arena.
struct Fp8Linear {
  const uint8_t* values = nullptr;  // [rows, cols] e4m3fn, device
  const float* scales = nullptr;    // see above, fp32, device
  int rows = 0;
  int cols = 0;
  int block_rows = 1;
  int block_cols = 0;
  int scale_cols = 1;

  explicit operator bool() const { return values != nullptr; }
  bool per_row() const { return block_rows == 1 && block_cols == 0; }
};

// True when the GEMV handles it: 1 <= rows <= kFp8GemvMaxRows, cols % 16 == 0, block_cols % 16 == 0,
// x and values 16-byte aligned.
bool fp8_gemv_supported(int rows, const Fp8Linear& w, const void* x);

// y[rows, w.rows] (fp32 when y_fp32, else bf16) = x[rows, w.cols] (bf16) * dequant(w)^T. With silu_in, x is
// [rows, 2 w.cols] ([gate | up]) and the operand is silu(gate) * up rounded to bf16, as launch_silu_and_mul.
// cudaErrorInvalidValue when !fp8_gemv_supported. The weights are decoded by the hardware converts
// (e4m3 -> f16 -> f32). Two alternatives were measured on an H200 and deleted (batch-1 decode of
// Llama-3.1-8B / 70B, ms/token; bench/results/2026-12-02-h200-fp8/README.md): decoding e4m3 with integer
// operations, 4.25 / 27.4, and a tensor-core GEMV (mma.sync with f16 operands), 4.55 / 30.5, against 3.85 / 24.3.
cudaError_t launch_fp8_gemv(const __nv_bfloat16* x, int rows, const Fp8Linear& w, void* y, bool y_fp32, bool silu_in,
                            const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream,
                            const LaunchOptions& options);

// For each of `rows` rows of x (bf16, row stride x_stride elements): scale = amax / 448 (1 when the row is
// all zeros), q = e4m3(x / scale) rounded to nearest even. q is [rows, cols] (stride cols), scales [rows].
cudaError_t launch_quantize_rows_fp8(const __nv_bfloat16* x, int rows, int cols, size_t x_stride, uint8_t* q,
                                     float* scales, cudaStream_t stream, const LaunchOptions& options);

// out[w.rows, w.cols] bf16 = dequant(w). REQUIRES w.cols % 16 == 0.
cudaError_t launch_dequantize_fp8(const Fp8Linear& w, __nv_bfloat16* out, cudaStream_t stream,
                                  const LaunchOptions& options);

// cuBLASLt FP8 GEMM, D = diag(x_scales) * xq * wq^T * diag(w.scales), in row-major terms
// y[rows, w.rows] bf16 from xq [rows, w.cols] e4m3 (per-row scales) and a per-row Fp8Linear. The algorithm
// of each shape is chosen once (cuBLASLt's heuristic) and cached.
class Fp8Gemm {
 public:
  // `workspace` (device, [workspace_bytes]) may be shared with other GEMMs of the same stream.
  Fp8Gemm(void* workspace, size_t workspace_bytes);
  ~Fp8Gemm();
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;

  // CUBLAS_STATUS_NOT_SUPPORTED when cuBLASLt has no algorithm for this shape (or !w.per_row()): the caller
  // takes the dequantizing path instead.
  cublasStatus_t run(const uint8_t* xq, const float* x_scales, int rows, const Fp8Linear& w, __nv_bfloat16* y,
                     cudaStream_t stream);
  // Whether cuBLASLt has an algorithm for [rows, in] x [out, in]^T (asks the heuristic, caches the answer).
  bool supports(int rows, int in, int out);

 private:
  struct Plan {
    bool ok = false;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan& plan(int rows, int in, int out);

  cublasLtHandle_t handle_ = nullptr;
  cublasLtMatmulDesc_t desc_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<std::tuple<int, int, int>, Plan> plans_;  // by (rows, in, out)
};

}  // namespace tandem::backend::cuda
