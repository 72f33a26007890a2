// FP8 weight kernels and the cuBLASLt FP8 GEMM (see fp8_gemm.cuh).
#include "backend/cuda/fp8_gemm.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <string>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"
#include "common/error.h"

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;           // warps per block, each a slice of K of the block's rows
constexpr int kRowsPerBlock = 4;    // weight rows per block
constexpr int kLaneBytes = 16;      // weights per lane per pass (one 16-byte load)
constexpr int kChunk = kWarp * kLaneBytes;  // K per warp pass: 512 contiguous bytes of a row
constexpr int kUnroll = 2;

// Weights are read once per step: keep them out of L1 so that the activations stay there.
__device__ __forceinline__ uint4 load_weights(const uint8_t* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// 16 e4m3 bytes (byte j is element j) to fp32, two at a time through the hardware e4m3x2 -> f16x2 convert.
__device__ __forceinline__ void fp8x16_to_float(const uint4& v, float (&f)[16]) {
  const auto* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&v);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const __half2 h(__nv_cvt_fp8x2_to_halfraw2(pairs[e], __NV_E4M3));
    const float2 t = __half22float2(h);
    f[2 * e] = t.x;
    f[2 * e + 1] = t.y;
  }
}

// 8 activations at row[k..k+8) as fp32; with kSiluIn, row is [gate | up] of 2 * in values and the value is
// silu(gate) * up rounded to bf16 (launch_silu_and_mul's numbers).
template <bool kSiluIn>
__device__ __forceinline__ void load_x8(const bf16* row, int k, int in, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row + k));
  const bf16* g = reinterpret_cast<const bf16*>(&raw);
  if constexpr (!kSiluIn) {
#pragma unroll
    for (int e = 0; e < 8; ++e) out[e] = __bfloat162float(g[e]);
  } else {
    const uint4 up = __ldg(reinterpret_cast<const uint4*>(row + in + k));
    const bf16* u = reinterpret_cast<const bf16*>(&up);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float gf = __bfloat162float(g[e]);
      out[e] = __bfloat162float(__float2bfloat16(gf / (1.0f + __expf(-gf)) * __bfloat162float(u[e])));
    }
  }
}

__device__ __forceinline__ float scale_at(const Fp8Linear& w, int row, int col) {
  return __ldg(w.scales + static_cast<size_t>(row / w.block_rows) * w.scale_cols + (w.block_cols > 0 ? col / w.block_cols : 0));
}

// One block: weight rows [tile * 4, +4) against M tokens; K passes split over the block's warps and over
// `splits` blocks (blockIdx.x = tile * splits + split), the last block of a tile to finish summing the
// others' partials (skinny_gemm.cu's scheme, same workspace). kBlock: scales vary along K (applied to each
// lane's 16-weight partial dot product); else one scale per row, applied to the finished sum.
template <int M, bool kOutF32, bool kSiluIn, bool kBlock>
__global__ void __launch_bounds__(kWarps * kWarp) fp8_gemv_kernel(const bf16* __restrict__ x, int rows, Fp8Linear w,
                                                                   void* __restrict__ y, int splits,
                                                                   float* __restrict__ ws,
                                                                   int32_t* __restrict__ counters) {
  __shared__ float red[kWarps][kRowsPerBlock * M];  // [warps, rows x tokens] fp32, shared
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int tile = blockIdx.x / splits, split = blockIdx.x % splits;
  const int in = w.cols, out = w.rows;
  const int num_chunks = (in + kChunk - 1) / kChunk;
  const int warp_splits = splits * kWarps;
  const int per_warp = (num_chunks + warp_splits - 1) / warp_splits;
  const int c_begin = min(num_chunks, (split * kWarps + warp) * per_warp);
  const int c_end = min(num_chunks, c_begin + per_warp);
  int row_of[kRowsPerBlock];
  const uint8_t* wr[kRowsPerBlock];
#pragma unroll
  for (int r = 0; r < kRowsPerBlock; ++r) {
    row_of[r] = min(tile * kRowsPerBlock + r, out - 1);  // rows past `out` read the last one, never written
    wr[r] = w.values + static_cast<size_t>(row_of[r]) * in + lane * kLaneBytes;
  }
  pdl_trigger();
  pdl_wait();
  const size_t x_stride = kSiluIn ? 2 * static_cast<size_t>(in) : static_cast<size_t>(in);
  float acc[kRowsPerBlock][M];
#pragma unroll
  for (int r = 0; r < kRowsPerBlock; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  }
  auto consume = [&](const uint4 (&a)[kRowsPerBlock], int k) {
    const int kl = k + lane * kLaneBytes;
    float xf[M][kLaneBytes];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m < rows) {
        load_x8<kSiluIn>(x + m * x_stride, kl, in, xf[m]);
        load_x8<kSiluIn>(x + m * x_stride, kl + 8, in, xf[m] + 8);
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerBlock; ++r) {
      float wf[kLaneBytes];
      fp8x16_to_float(a[r], wf);
      const float s = kBlock ? scale_at(w, row_of[r], kl) : 1.0f;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= rows) break;
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < kLaneBytes; ++e) d += wf[e] * xf[m][e];
        if constexpr (kBlock) {
          acc[r][m] += d * s;
        } else {
          acc[r][m] += d;
        }
      }
    }
  };
  int c = c_begin;
  for (; c + kUnroll <= c_end; c += kUnroll) {
    uint4 a[kUnroll][kRowsPerBlock];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const bool ok = (c + u) * kChunk + lane * kLaneBytes < in;
#pragma unroll
      for (int r = 0; r < kRowsPerBlock; ++r) a[u][r] = ok ? load_weights(wr[r] + (c + u) * kChunk) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (c + u) * kChunk;
      if (k + lane * kLaneBytes < in) consume(a[u], k);
    }
  }
  for (; c < c_end; ++c) {
    const int k = c * kChunk;
    if (k + lane * kLaneBytes >= in) continue;
    uint4 a[kRowsPerBlock];
#pragma unroll
    for (int r = 0; r < kRowsPerBlock; ++r) a[r] = load_weights(wr[r] + k);
    consume(a, k);
  }
#pragma unroll
  for (int r = 0; r < kRowsPerBlock; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) red[warp][r * M + m] = v;
    }
  }
  __syncthreads();
  if (warp != 0) return;
  const bool mine = lane < kRowsPerBlock * M;
  float sum = 0.0f;
  if (mine) {
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += red[v][lane];
  }
  if (splits > 1) {
    float* slot = ws + (static_cast<size_t>(tile) * splits + split) * kRowsPerBlock * M;
    if (mine) __stcg(slot + lane, sum);
    __threadfence();
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(&counters[tile], 1);
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != splits - 1) return;
    __threadfence();
    sum = 0.0f;
    const float* all = ws + static_cast<size_t>(tile) * splits * kRowsPerBlock * M;
    for (int sp = 0; sp < splits && mine; ++sp) sum += __ldcg(all + sp * kRowsPerBlock * M + lane);
    if (lane == 0) counters[tile] = 0;  // ready for the next launch (ordered after it by the stream)
  }
  if (!mine) return;
  const int r = lane / M, m = lane % M;
  const int n = tile * kRowsPerBlock + r;
  if (n >= out || m >= rows) return;
  if constexpr (!kBlock) sum *= scale_at(w, n, 0);
  const size_t at = static_cast<size_t>(m) * out + n;
  if constexpr (kOutF32) {
    static_cast<float*>(y)[at] = sum;
  } else {
    static_cast<bf16*>(y)[at] = __float2bfloat16(sum);
  }
}

template <int M, bool kSiluIn, bool kBlock>
cudaError_t launch_gemv(const bf16* x, int rows, const Fp8Linear& w, void* y, bool y_fp32, int tiles, int splits,
                        const SkinnyGemmWorkspace& ws, cudaStream_t stream, const LaunchOptions& options) {
  const dim3 grid(static_cast<unsigned>(tiles * splits)), block(kWarps * kWarp);
  if (y_fp32) {
    return launch_kernel(fp8_gemv_kernel<M, true, kSiluIn, kBlock>, grid, block, 0, stream, options, x, rows, w, y,
                         splits, ws.partials, ws.counters);
  }
  return launch_kernel(fp8_gemv_kernel<M, false, kSiluIn, kBlock>, grid, block, 0, stream, options, x, rows, w, y,
                       splits, ws.partials, ws.counters);
}

template <int M, bool kSiluIn>
cudaError_t launch_gemv_m(const bf16* x, int rows, const Fp8Linear& w, void* y, bool y_fp32, int tiles, int splits,
                          const SkinnyGemmWorkspace& ws, cudaStream_t stream, const LaunchOptions& options) {
  return w.block_cols > 0 ? launch_gemv<M, kSiluIn, true>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options)
                          : launch_gemv<M, kSiluIn, false>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options);
}

// One block per row: the row's amax, then its values divided by amax / 448.
constexpr int kQuantThreads = 256;

__global__ void __launch_bounds__(kQuantThreads) quantize_rows_kernel(const bf16* __restrict__ x, int cols,
                                                                       size_t x_stride, uint8_t* __restrict__ q,
                                                                       float* __restrict__ scales) {
  __shared__ float partial[kQuantThreads / kWarp];
  __shared__ float row_scale;
  pdl_trigger();
  pdl_wait();
  const bf16* row = x + static_cast<size_t>(blockIdx.x) * x_stride;
  // 8 values per load where the row allows it (cols % 8 == 0 and 16-byte aligned rows), else one by one.
  const bool vec = cols % 8 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0;
  float amax = 0.0f;
  if (vec) {
    for (int c = threadIdx.x * 8; c < cols; c += kQuantThreads * 8) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row + c));
      const bf16* v = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
      for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fabsf(__bfloat162float(v[e])));
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kQuantThreads) amax = fmaxf(amax, fabsf(__bfloat162float(row[c])));
  }
  amax = warp_max(amax);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = 0.0f;
    for (int i = 0; i < kQuantThreads / kWarp; ++i) m = fmaxf(m, partial[i]);
    const float s = m > 0.0f ? m / kFp8E4m3Max : 1.0f;
    row_scale = s;
    scales[blockIdx.x] = s;
  }
  __syncthreads();
  const float s = row_scale;
  uint8_t* out = q + static_cast<size_t>(blockIdx.x) * cols;
  if (vec && reinterpret_cast<uintptr_t>(out) % 8 == 0) {
    for (int c = threadIdx.x * 8; c < cols; c += kQuantThreads * 8) {
      const uint4 raw = __ldg(reinterpret_cast<const uint4*>(row + c));
      const bf16* v = reinterpret_cast<const bf16*>(&raw);
      uint2 packed;
      uint8_t* o = reinterpret_cast<uint8_t*>(&packed);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        o[e] = __nv_cvt_float_to_fp8(__fdiv_rn(__bfloat162float(v[e]), s), __NV_SATFINITE, __NV_E4M3);
      }
      *reinterpret_cast<uint2*>(out + c) = packed;
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kQuantThreads) {
      out[c] = __nv_cvt_float_to_fp8(__fdiv_rn(__bfloat162float(row[c]), s), __NV_SATFINITE, __NV_E4M3);
    }
  }
}

// Each thread 16 consecutive weights of one row (cols % 16 == 0).
__global__ void dequantize_kernel(Fp8Linear w, bf16* __restrict__ out, size_t num_groups) {
  pdl_trigger();
  pdl_wait();
  const size_t g = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= num_groups) return;
  const size_t first = g * kLaneBytes;
  const int row = static_cast<int>(first / w.cols), col = static_cast<int>(first % w.cols);
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(w.values + first));
  float f[kLaneBytes];
  fp8x16_to_float(raw, f);
  const float s = scale_at(w, row, col);
  uint4 packed[2];
  bf16* o = reinterpret_cast<bf16*>(packed);
#pragma unroll
  for (int e = 0; e < kLaneBytes; ++e) o[e] = __float2bfloat16(f[e] * s);
  reinterpret_cast<uint4*>(out + first)[0] = packed[0];
  reinterpret_cast<uint4*>(out + first)[1] = packed[1];
}

}  // namespace

bool fp8_gemv_supported(int rows, const Fp8Linear& w, const void* x) {
  return rows >= 1 && rows <= kFp8GemvMaxRows && w.rows > 0 && w.cols > 0 && w.cols % kLaneBytes == 0 &&
         (w.block_cols == 0 || w.block_cols % kLaneBytes == 0) && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w.values) % 16 == 0 && w.scales != nullptr;
}

cudaError_t launch_fp8_gemv(const bf16* x, int rows, const Fp8Linear& w, void* y, bool y_fp32, bool silu_in,
                            const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream,
                            const LaunchOptions& options) {
  if (!fp8_gemv_supported(rows, w, x) || !y) return cudaErrorInvalidValue;
  const int m = rows <= 1 ? 1 : (rows <= 2 ? 2 : 4);
  const int tiles = (w.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const int chunks = (w.cols + kChunk - 1) / kChunk;
  // About 8 resident blocks per SM, each warp with at least one pass; a split needs a counter per tile and
  // workspace for its partials.
  const int want_blocks = std::max(1, num_sms) * 8;
  int splits = std::clamp((want_blocks + tiles - 1) / tiles, 1, std::max(1, chunks / kWarps));
  if (splits > 1 && (tiles > ws.num_counters || !ws.partials || !ws.counters ||
                     static_cast<size_t>(tiles) * splits * kRowsPerBlock * m > ws.partial_floats)) {
    splits = 1;
  }
  if (m == 1) {
    return silu_in ? launch_gemv_m<1, true>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options)
                   : launch_gemv_m<1, false>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options);
  }
  if (m == 2) {
    return silu_in ? launch_gemv_m<2, true>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options)
                   : launch_gemv_m<2, false>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options);
  }
  return silu_in ? launch_gemv_m<4, true>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options)
                 : launch_gemv_m<4, false>(x, rows, w, y, y_fp32, tiles, splits, ws, stream, options);
}

cudaError_t launch_quantize_rows_fp8(const bf16* x, int rows, int cols, size_t x_stride, uint8_t* q, float* scales,
                                     cudaStream_t stream, const LaunchOptions& options) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  return launch_kernel(quantize_rows_kernel, dim3(static_cast<unsigned>(rows)), dim3(kQuantThreads), 0, stream, options,
                       x, cols, x_stride, q, scales);
}

cudaError_t launch_dequantize_fp8(const Fp8Linear& w, bf16* out, cudaStream_t stream, const LaunchOptions& options) {
  if (w.cols % kLaneBytes != 0) return cudaErrorInvalidValue;
  const size_t groups = static_cast<size_t>(w.rows) * w.cols / kLaneBytes;
  if (groups == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  return launch_kernel(dequantize_kernel, dim3(static_cast<unsigned>((groups + kThreads - 1) / kThreads)),
                       dim3(kThreads), 0, stream, options, w, out, groups);
}

Fp8Gemm::Fp8Gemm(void* workspace, size_t workspace_bytes) : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  auto check = [](cublasStatus_t st, const char* what) {
    if (st != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuBLASLt ") + what + ": " + cublasGetStatusString(st));
  };
  check(cublasLtCreate(&handle_), "create");
  check(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  // Row-major y = x w^T is column-major y^T = w^T x^T: A = w (transposed), B = x; FP8 wants exactly this "TN".
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)), "transa");
  check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)), "transb");
  const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
  check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)), "A scale mode");
  check(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)), "B scale mode");
}

Fp8Gemm::~Fp8Gemm() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  }
  if (desc_) cublasLtMatmulDescDestroy(desc_);
  if (handle_) cublasLtDestroy(handle_);
}

Fp8Gemm::Plan& Fp8Gemm::plan(int rows, int in, int out) {
  const auto key = std::make_tuple(rows, in, out);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  if (cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, in, out, in) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, in, rows, in) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.d, CUDA_R_16BF, out, rows, out) != CUBLAS_STATUS_SUCCESS) {
    return p;
  }
  // The heuristic sees the scale modes; the pointers set per call, any device address will do here.
  const void* any = workspace_;
  cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &any, sizeof(any));
  cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &any, sizeof(any));
  cublasLtMatmulPreference_t pref = nullptr;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return p;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                       sizeof(workspace_bytes_));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  if (cublasLtMatmulAlgoGetHeuristic(handle_, desc_, p.a, p.b, p.d, p.d, pref, 1, &result, &returned) ==
          CUBLAS_STATUS_SUCCESS &&
      returned > 0) {
    p.ok = true;
    p.algo = result.algo;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return p;
}

bool Fp8Gemm::supports(int rows, int in, int out) { return plan(rows, in, out).ok; }

cublasStatus_t Fp8Gemm::run(const uint8_t* xq, const float* x_scales, int rows, const Fp8Linear& w, bf16* y,
                            cudaStream_t stream) {
  if (!w.per_row()) return CUBLAS_STATUS_NOT_SUPPORTED;
  Plan& p = plan(rows, w.cols, w.rows);
  if (!p.ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  const void* a_scale = w.scales;
  const void* b_scale = x_scales;
  cublasStatus_t st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale));
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  st = cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale));
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle_, desc_, &alpha, w.values, p.a, xq, p.b, &beta, y, p.d, y, p.d, &p.algo, workspace_,
                        workspace_bytes_, stream);
}

double measure_fp8_gemm_tflops(int device, int m, int n, int k, int iters) {
  TANDEM_CUDA_THROW(cudaSetDevice(device), device);
  cudaStream_t stream = nullptr;
  TANDEM_CUDA_THROW(cudaStreamCreate(&stream), device);
  const size_t workspace_bytes = 32ull << 20;
  uint8_t *a = nullptr, *b = nullptr;
  float* scales = nullptr;
  bf16* d = nullptr;
  void* workspace = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  auto cleanup = [&]() {
    cudaFree(a);
    cudaFree(b);
    cudaFree(scales);
    cudaFree(d);
    cudaFree(workspace);
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
  };
  try {
    TANDEM_CUDA_THROW(cudaMalloc(&a, static_cast<size_t>(m) * k), device);
    TANDEM_CUDA_THROW(cudaMalloc(&b, static_cast<size_t>(n) * k), device);
    TANDEM_CUDA_THROW(cudaMalloc(&scales, static_cast<size_t>(std::max(m, n)) * sizeof(float)), device);
    TANDEM_CUDA_THROW(cudaMalloc(&d, static_cast<size_t>(m) * n * sizeof(bf16)), device);
    TANDEM_CUDA_THROW(cudaMalloc(&workspace, workspace_bytes), device);
    TANDEM_CUDA_THROW(cudaMemset(a, 0x38, static_cast<size_t>(m) * k), device);  // e4m3 1.0
    TANDEM_CUDA_THROW(cudaMemset(b, 0x30, static_cast<size_t>(n) * k), device);  // e4m3 0.5
    TANDEM_CUDA_THROW(cudaMemset(scales, 0, static_cast<size_t>(std::max(m, n)) * sizeof(float)), device);
    TANDEM_CUDA_THROW(cudaEventCreate(&start), device);
    TANDEM_CUDA_THROW(cudaEventCreate(&stop), device);
    Fp8Gemm gemm(workspace, workspace_bytes);
    Fp8Linear w;
    w.values = b;
    w.scales = scales;
    w.rows = n;
    w.cols = k;
    auto once = [&]() {
      const cublasStatus_t st = gemm.run(a, scales, m, w, d, stream);
      if (st != CUBLAS_STATUS_SUCCESS) throw Error(std::string("FP8 GEMM: ") + cublasGetStatusString(st));
    };
    once();
    TANDEM_CUDA_THROW(cudaEventRecord(start, stream), device);
    for (int i = 0; i < iters; ++i) once();
    TANDEM_CUDA_THROW(cudaEventRecord(stop, stream), device);
    TANDEM_CUDA_THROW(cudaEventSynchronize(stop), device);
    float ms = 0.0f;
    TANDEM_CUDA_THROW(cudaEventElapsedTime(&ms, start, stop), device);
    cleanup();
    return 2.0 * m * n * k * iters / (ms * 1e-3) / 1e12;
  } catch (...) {
    cleanup();
    throw;
  }
}

}  // namespace tandem::backend::cuda
