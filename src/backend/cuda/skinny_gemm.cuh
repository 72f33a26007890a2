// Skinny GEMM for decode steps: y[M, N] = x[M, K] * w[N, K]^T with few rows M (<= 16), bf16 inputs and
// fp32 accumulation. Such a product only streams the weight matrix once, so what matters is reading w at
// HBM bandwidth. Two kernels:
//  - 1-2 tokens: row streaming with FMAs. Each warp instruction reads 512 contiguous bytes of one weight
//    row (16 per lane, several rows and slices in flight), the pattern that reaches full DRAM bandwidth;
//    the dot products are reduced across lanes at the end.
//  - 3-16 tokens: tensor cores. Every lane loads 16 bytes of two weight rows per 32-wide slice of K
//    straight into registers (no shared memory) and feeds them to mma.sync m16n8k16 as the A operand
//    (16 weight rows) against the tokens as the B operand (8 tokens per n-tile); K is permuted the same
//    way in A and B, so each lane's contiguous 16 bytes are a valid fragment. Its 64-byte pieces per row
//    reach ~75% of the bandwidth of row streaming on large matrices, so cuBLAS keeps those
//    (skinny_gemm_preferred).
//
// Small N is split over K across warps (in one block, reduced through shared memory) and across blocks
// (the last block of a row tile to finish sums the others' partials from a workspace, found with an
// atomic counter that it resets, so the kernel stays valid inside a CUDA graph). One launch per GEMM.
//
// Thread-safety: the workspace belongs to one stream; launches that share it must be ordered on it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

// Largest M the skinny kernel takes.
constexpr int kSkinnyMaxRows = 16;

// Scratch of the cross-block split over K. Zero `counters` once (cudaMemset) before the first launch;
// the kernel leaves them zero.
struct SkinnyGemmWorkspace {
  float* partials = nullptr;   // [partial_floats] fp32, device
  size_t partial_floats = 0;
  int32_t* counters = nullptr;  // [num_counters] int32, device, zero between launches
  int num_counters = 0;
};

// True when the kernel handles this shape: 1 <= rows <= kSkinnyMaxRows, in % 8 == 0, x/w 16-byte aligned.
bool skinny_gemm_supported(int rows, int in, const void* x, const void* w);

// Whether the skinny kernel is expected to beat cuBLAS on this shape (measured, see skinny_gemm.cu).
bool skinny_gemm_preferred(int rows, int in, int out);

// y[rows, out] (row-major, fp32 when y_fp32 else bf16) = x[rows, in] (bf16, row-major) * w[out, in]^T
// (bf16, row-major), all device. num_sms picks the split over K. cudaErrorInvalidValue when unsupported.
cudaError_t launch_skinny_gemm(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out, void* y,
                               bool y_fp32, const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream,
                               const LaunchOptions& options);

// The same with the MLP's activation folded into the loads of x: y = (silu(gate) * up) * w^T, where
// gate_up is [rows, 2 in] bf16 ([gate | up] per row) and the product is rounded to bf16 before the
// GEMM, exactly as launch_silu_and_mul followed by launch_skinny_gemm. REQUIRES
// skinny_gemm_supported(rows, in, gate_up, w).
cudaError_t launch_skinny_gemm_silu(const __nv_bfloat16* gate_up, int rows, int in, const __nv_bfloat16* w, int out,
                                    void* y, bool y_fp32, const SkinnyGemmWorkspace& ws, int num_sms,
                                    cudaStream_t stream, const LaunchOptions& options);

// One kernel variant, for tests and benchmarks: 0 mma (tensor cores, fragments loaded from global), 1 the
// same with an L2 256-byte fetch hint, 2 that with an L2 prefetch before the PDL wait, 3 row-streaming
// FMAs (rows <= 4, else 1); -1 the default choice.
cudaError_t launch_skinny_gemm_variant(const __nv_bfloat16* x, int rows, int in, const __nv_bfloat16* w, int out,
                                       void* y, bool y_fp32, bool silu_in, const SkinnyGemmWorkspace& ws, int num_sms,
                                       int variant, cudaStream_t stream, const LaunchOptions& options);

}  // namespace tandem::backend::cuda
