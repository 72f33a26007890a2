// Skinny GEMM kernel and its launcher (see skinny_gemm.cuh).
#include "backend/cuda/skinny_gemm.cuh"

#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"

#include <algorithm>

namespace tandem::backend::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;      // warps per block, each a slice of K of the block's 16 weight rows
constexpr int kTileRows = 16;  // weight rows per block (the mma's M)
constexpr int kSliceK = 32;    // K per slice: 4 lanes x 8 bf16 per weight row
constexpr int kUnroll = 4;     // slices whose loads are issued before the first mma
constexpr int kTileFloats = kTileRows * 8;  // one n-tile of fp32 results: 16 rows x 8 tokens

// Weights are read once per step: keep them out of L1 so the activations stay there. kL2Hint asks L2
// to fetch the 256-byte block around the access from DRAM (the warp's next slices of the same rows).
template <bool kL2Hint>
__device__ __forceinline__ uint4 load_stream(const bf16* p) {
  uint4 r;
  if constexpr (kL2Hint) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
  } else {
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
  }
  return r;
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One block: weight rows [tile * 16, +16) against all tokens, K slices split over the block's warps and
// over `splits` blocks (blockIdx.x = tile * splits + split). NT n-tiles of 8 tokens.
//
// Fragments (mma m16n8k16, g = lane / 4, q = lane % 4): lane loads 8 consecutive k of weight rows g and
// g + 8 and of token g, at k = slice * 32 + 8q. Logical k (2q, 2q+1) of the first mma is physical
// (8q, 8q+1), logical (2q+8, 2q+9) is (8q+2, 8q+3); the second mma takes 8q+4 .. 8q+7 the same way.
// A and B use the same map, so the dot products are unchanged.
// The B operand: 8 bf16 of token row x_row at k. With kSiluIn, x_row points at a [gate | up] row of
// 2 * in values and the operand is silu(gate) * up, rounded to bf16 as launch_silu_and_mul does.
template <bool kSiluIn>
__device__ __forceinline__ uint4 load_b(const bf16* x_row, int k, int in) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(x_row + k));
  if constexpr (!kSiluIn) {
    return raw;
  } else {
    const uint4 up = __ldg(reinterpret_cast<const uint4*>(x_row + in + k));
    const bf16* g = reinterpret_cast<const bf16*>(&raw);
    const bf16* u = reinterpret_cast<const bf16*>(&up);
    uint4 out;
    bf16* o = reinterpret_cast<bf16*>(&out);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float gf = __bfloat162float(g[e]);
      o[e] = __float2bfloat16(gf / (1.0f + __expf(-gf)) * __bfloat162float(u[e]));
    }
    return out;
  }
}

template <int NT, bool kOutF32, bool kSiluIn, bool kL2Hint>
__global__ void __launch_bounds__(kWarps * kWarp) skinny_gemm_kernel(const bf16* __restrict__ x, int rows, int in,
                                                                      const bf16* __restrict__ w, int out,
                                                                      void* __restrict__ y, int splits,
                                                                      float* __restrict__ ws, int32_t* __restrict__ counters,
                                                                      bool prefetch) {
  __shared__ __align__(16) float red[kWarps][NT][kWarp][4];  // [warps, n-tiles, lanes, 4] fp32, shared
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int g = lane / 4, q = lane % 4;
  const int tile = blockIdx.x / splits, split = blockIdx.x % splits;
  const int num_slices = (in + kSliceK - 1) / kSliceK;
  const int warp_splits = splits * kWarps;
  const int per_warp = (num_slices + warp_splits - 1) / warp_splits;
  const int s_begin = min(num_slices, (split * kWarps + warp) * per_warp);
  const int s_end = min(num_slices, s_begin + per_warp);

  // Rows past `out` read the last row (kept in bounds) and are never written.
  const int row0 = min(tile * kTileRows + g, out - 1), row1 = min(tile * kTileRows + g + 8, out - 1);
  const bf16* w0 = w + static_cast<size_t>(row0) * in + 8 * q;
  const bf16* w1 = w + static_cast<size_t>(row1) * in + 8 * q;
  const bool full_k = in % kSliceK == 0;
  // The weights are constant: start pulling this warp's first slices into L2 while the previous kernel
  // (launched before us with PDL) finishes; x is only read after pdl_wait().
  pdl_trigger();
  for (int s = s_begin; prefetch && s < min(s_end, s_begin + 2 * kUnroll); ++s) {
    const int k = s * kSliceK;
    if (full_k || k + 8 * q < in) {
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(w0 + k));
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(w1 + k));
    }
  }
  pdl_wait();
  const bf16* xr[NT];
  bool has_token[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int m = nt * 8 + g;
    has_token[nt] = m < rows;
    xr[nt] = x + static_cast<size_t>(min(m, rows - 1)) * (kSiluIn ? 2 * in : in) + 8 * q;
  }

  float acc[NT][2][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[nt][0][i] = acc[nt][1][i] = 0.0f;
  }
  int s = s_begin;
  for (; s + kUnroll <= s_end; s += kUnroll) {
    uint4 a0[kUnroll], a1[kUnroll], b[kUnroll][NT];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (s + u) * kSliceK;
      const bool ok = full_k || k + 8 * q < in;
      a0[u] = ok ? load_stream<kL2Hint>(w0 + k) : make_uint4(0, 0, 0, 0);
      a1[u] = ok ? load_stream<kL2Hint>(w1 + k) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        b[u][nt] = ok && has_token[nt] ? load_b<kSiluIn>(xr[nt], k, in) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mma_bf16(acc[nt][u % 2], a0[u].x, a1[u].x, a0[u].y, a1[u].y, b[u][nt].x, b[u][nt].y);
        mma_bf16(acc[nt][u % 2], a0[u].z, a1[u].z, a0[u].w, a1[u].w, b[u][nt].z, b[u][nt].w);
      }
    }
  }
  for (; s < s_end; ++s) {
    const int k = s * kSliceK;
    const bool ok = full_k || k + 8 * q < in;
    const uint4 a0 = ok ? load_stream<kL2Hint>(w0 + k) : make_uint4(0, 0, 0, 0);
    const uint4 a1 = ok ? load_stream<kL2Hint>(w1 + k) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint4 b = ok && has_token[nt] ? load_b<kSiluIn>(xr[nt], k, in) : make_uint4(0, 0, 0, 0);
      mma_bf16(acc[nt][0], a0.x, a1.x, a0.y, a1.y, b.x, b.y);
      mma_bf16(acc[nt][0], a0.z, a1.z, a0.w, a1.w, b.z, b.w);
    }
  }

#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    *reinterpret_cast<float4*>(red[warp][nt][lane]) =
        make_float4(acc[nt][0][0] + acc[nt][1][0], acc[nt][0][1] + acc[nt][1][1], acc[nt][0][2] + acc[nt][1][2],
                    acc[nt][0][3] + acc[nt][1][3]);
  }
  __syncthreads();
  if (warp != 0) return;
  float sum[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      sum[nt][i] = 0.0f;
#pragma unroll
      for (int v = 0; v < kWarps; ++v) sum[nt][i] += red[v][nt][lane][i];
    }
  }

  if (splits > 1) {
    // Publish this block's partial; the last block of the tile to arrive adds them all up.
    float* mine = ws + (static_cast<size_t>(tile) * splits + split) * NT * kTileFloats;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      __stcg(reinterpret_cast<float4*>(mine + nt * kTileFloats + lane * 4),
             make_float4(sum[nt][0], sum[nt][1], sum[nt][2], sum[nt][3]));
    }
    __threadfence();
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(&counters[tile], 1);
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != splits - 1) return;
    __threadfence();
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) sum[nt][i] = 0.0f;
    }
    const float* all = ws + static_cast<size_t>(tile) * splits * NT * kTileFloats;
    for (int sp = 0; sp < splits; ++sp) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(all + (sp * NT + nt) * kTileFloats + lane * 4));
        sum[nt][0] += v.x;
        sum[nt][1] += v.y;
        sum[nt][2] += v.z;
        sum[nt][3] += v.w;
      }
    }
    if (lane == 0) counters[tile] = 0;  // ready for the next launch (ordered after it by the stream)
  }

  // c0, c1: weight row g, tokens 2q, 2q + 1; c2, c3: row g + 8.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = tile * kTileRows + g + (i / 2) * 8;
      const int m = nt * 8 + 2 * q + i % 2;
      if (n >= out || m >= rows) continue;
      const size_t at = static_cast<size_t>(m) * out + n;
      if constexpr (kOutF32) {
        static_cast<float*>(y)[at] = sum[nt][i];
      } else {
        static_cast<bf16*>(y)[at] = __float2bfloat16(sum[nt][i]);
      }
    }
  }
}

// ---- Row-streaming variant for 1-4 tokens (plain FMAs): each warp instruction reads 512 contiguous
// bytes of one weight row (16 per lane), the access pattern DRAM likes best; the dot products are
// reduced across lanes at the end. kFmaRows rows per block, K split over warps and blocks as above.
constexpr int kFmaRows = 4;
constexpr int kFmaChunk = kWarp * 8;  // K per warp pass
constexpr int kFmaUnroll = 2;

__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const float2 t = __bfloat1622float2(h[e]);
    f[2 * e] = t.x;
    f[2 * e + 1] = t.y;
  }
}

template <int M, bool kOutF32, bool kSiluIn>
__global__ void __launch_bounds__(kWarps * kWarp) gemv_fma_kernel(const bf16* __restrict__ x, int rows, int in,
                                                                   const bf16* __restrict__ w, int out,
                                                                   void* __restrict__ y, int splits,
                                                                   float* __restrict__ ws, int32_t* __restrict__ counters) {
  __shared__ float red[kWarps][kFmaRows * M];  // [warps, rows x tokens] fp32, shared
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int tile = blockIdx.x / splits, split = blockIdx.x % splits;
  const int num_chunks = (in + kFmaChunk - 1) / kFmaChunk;
  const int warp_splits = splits * kWarps;
  const int per_warp = (num_chunks + warp_splits - 1) / warp_splits;
  const int c_begin = min(num_chunks, (split * kWarps + warp) * per_warp);
  const int c_end = min(num_chunks, c_begin + per_warp);
  const bf16* wr[kFmaRows];
#pragma unroll
  for (int r = 0; r < kFmaRows; ++r) wr[r] = w + static_cast<size_t>(min(tile * kFmaRows + r, out - 1)) * in + lane * 8;
  pdl_trigger();
  pdl_wait();
  const size_t x_stride = kSiluIn ? 2 * static_cast<size_t>(in) : static_cast<size_t>(in);
  float acc[kFmaRows][M];
#pragma unroll
  for (int r = 0; r < kFmaRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  }
  auto consume = [&](const uint4 (&a)[kFmaRows], int k) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m >= rows) break;
      float xf[8];
      bf16x8_to_float(load_b<kSiluIn>(x + m * x_stride + lane * 8, k, in), xf);
#pragma unroll
      for (int r = 0; r < kFmaRows; ++r) {
        float wf[8];
        bf16x8_to_float(a[r], wf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[r][m] += wf[e] * xf[e];
      }
    }
  };
  int c = c_begin;
  for (; c + kFmaUnroll <= c_end; c += kFmaUnroll) {
    uint4 a[kFmaUnroll][kFmaRows];
#pragma unroll
    for (int u = 0; u < kFmaUnroll; ++u) {
      const int k = (c + u) * kFmaChunk;
      const bool ok = k + lane * 8 < in;
#pragma unroll
      for (int r = 0; r < kFmaRows; ++r) a[u][r] = ok ? load_stream<false>(wr[r] + k) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kFmaUnroll; ++u) {
      const int k = (c + u) * kFmaChunk;
      if (k + lane * 8 < in) consume(a[u], k);
    }
  }
  for (; c < c_end; ++c) {
    const int k = c * kFmaChunk;
    if (k + lane * 8 >= in) continue;
    uint4 a[kFmaRows];
#pragma unroll
    for (int r = 0; r < kFmaRows; ++r) a[r] = load_stream<false>(wr[r] + k);
    consume(a, k);
  }
#pragma unroll
  for (int r = 0; r < kFmaRows; ++r) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) red[warp][r * M + m] = v;
    }
  }
  __syncthreads();
  if (warp != 0) return;
  const bool mine = lane < kFmaRows * M;
  float sum = 0.0f;
  if (mine) {
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += red[v][lane];
  }
  if (splits > 1) {
    float* slot = ws + (static_cast<size_t>(tile) * splits + split) * kFmaRows * M;
    if (mine) __stcg(slot + lane, sum);
    __threadfence();
    __syncwarp();
    int arrived = 0;
    if (lane == 0) arrived = atomicAdd(&counters[tile], 1);
    arrived = __shfl_sync(0xffffffffu, arrived, 0);
    if (arrived != splits - 1) return;
    __threadfence();
    sum = 0.0f;
    const float* all = ws + static_cast<size_t>(tile) * splits * kFmaRows * M;
    for (int sp = 0; sp < splits && mine; ++sp) sum += __ldcg(all + sp * kFmaRows * M + lane);
    if (lane == 0) counters[tile] = 0;
  }
  if (!mine) return;
  const int r = lane / M, m = lane % M;
  const int n = tile * kFmaRows + r;
  if (n >= out || m >= rows) return;
  const size_t at = static_cast<size_t>(m) * out + n;
  if constexpr (kOutF32) {
    static_cast<float*>(y)[at] = sum;
  } else {
    static_cast<bf16*>(y)[at] = __float2bfloat16(sum);
  }
}

template <int NT, bool kSiluIn, bool kL2Hint>
cudaError_t launch_nt(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32, int tiles,
                      int splits, const SkinnyGemmWorkspace& ws, bool prefetch, cudaStream_t stream,
                      const LaunchOptions& options) {
  const dim3 grid(static_cast<unsigned>(tiles * splits)), block(kWarps * kWarp);
  if (y_fp32) {
    return launch_kernel(skinny_gemm_kernel<NT, true, kSiluIn, kL2Hint>, grid, block, 0, stream, options, x, rows, in,
                         w, out, y, splits, ws.partials, ws.counters, prefetch);
  }
  return launch_kernel(skinny_gemm_kernel<NT, false, kSiluIn, kL2Hint>, grid, block, 0, stream, options, x, rows, in, w,
                       out, y, splits, ws.partials, ws.counters, prefetch);
}

template <int M, bool kSiluIn>
cudaError_t launch_fma(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32, int tiles,
                       int splits, const SkinnyGemmWorkspace& ws, cudaStream_t stream, const LaunchOptions& options) {
  const dim3 grid(static_cast<unsigned>(tiles * splits)), block(kWarps * kWarp);
  if (y_fp32) {
    return launch_kernel(gemv_fma_kernel<M, true, kSiluIn>, grid, block, 0, stream, options, x, rows, in, w, out, y,
                         splits, ws.partials, ws.counters);
  }
  return launch_kernel(gemv_fma_kernel<M, false, kSiluIn>, grid, block, 0, stream, options, x, rows, in, w, out, y,
                       splits, ws.partials, ws.counters);
}

}  // namespace

bool skinny_gemm_supported(int rows, int in, const void* x, const void* w) {
  return rows >= 1 && rows <= kSkinnyMaxRows && in > 0 && in % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

bool skinny_gemm_preferred(int rows, int in, int out) {
  // cuBLAS matches the tensor-core variant on large matrices from 3 tokens on, and beats it on the
  // largest (Llama-3.1-8B's down projection and lm_head at 8-16 tokens): keep it there.
  constexpr size_t kLargeWeightBytes = 64ull << 20;
  return rows >= 1 && (rows <= 2 || (rows <= kSkinnyMaxRows && static_cast<size_t>(in) * out * 2 <= kLargeWeightBytes));
}

namespace {

int choose_splits(int tiles, int units, int min_units_per_warp, size_t floats_per_tile, const SkinnyGemmWorkspace& ws,
                  int num_sms) {
  // Enough blocks for about 8 resident per SM, each warp with at least min_units_per_warp units of K;
  // a split needs workspace and a counter per tile.
  const int want_blocks = std::max(1, num_sms) * 8;
  int splits = std::clamp((want_blocks + tiles - 1) / tiles, 1, std::max(1, units / (min_units_per_warp * kWarps)));
  if (splits > 1 && (tiles > ws.num_counters || !ws.partials || !ws.counters ||
                     static_cast<size_t>(tiles) * splits * floats_per_tile > ws.partial_floats)) {
    splits = 1;
  }
  return splits;
}

cudaError_t launch_skinny(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32, bool silu_in,
                          const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream, const LaunchOptions& options,
                          int variant) {
  if (!skinny_gemm_supported(rows, in, x, w) || out <= 0 || !y) return cudaErrorInvalidValue;
  // Measured on an H100 (SkinnyGemmBench): row streaming is the fastest for 1-2 tokens on every shape;
  // from 3 tokens on its FMA work (and the folded silu) costs more than the tensor-core variant.
  // (A bulk L2 prefetch of the first weights before the PDL wait lost at batch 1 on an H200, 3% on
  // Qwen3-0.6B and 14% on Llama-3.1-8B: bench/results/2026-11-28-h200/baseline/exp.)
  if (variant < 0) variant = rows <= 2 ? 3 : 1;
  if (variant == 3 && rows <= 4) {
    const int tiles = (out + kFmaRows - 1) / kFmaRows;
    const int chunks = (in + kFmaChunk - 1) / kFmaChunk;
    const int m = rows <= 1 ? 1 : (rows <= 2 ? 2 : 4);
    const int splits = choose_splits(tiles, chunks, 1, static_cast<size_t>(kFmaRows) * m, ws, num_sms);
    if (m == 1) {
      return silu_in ? launch_fma<1, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options)
                     : launch_fma<1, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options);
    }
    if (m == 2) {
      return silu_in ? launch_fma<2, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options)
                     : launch_fma<2, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options);
    }
    return silu_in ? launch_fma<4, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options)
                   : launch_fma<4, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, stream, options);
  }
  const int tiles = (out + kTileRows - 1) / kTileRows;
  const int nt = rows <= 8 ? 1 : 2;
  const int num_slices = (in + kSliceK - 1) / kSliceK;
  const int splits = choose_splits(tiles, num_slices, 2, static_cast<size_t>(nt) * kTileFloats, ws, num_sms);
  const bool hint = variant >= 1, prefetch = variant == 2;
  if (nt == 1) {
    if (hint) {
      return silu_in ? launch_nt<1, true, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream,
                                                options)
                     : launch_nt<1, false, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream,
                                                 options);
    }
    return silu_in
               ? launch_nt<1, true, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream, options)
               : launch_nt<1, false, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream,
                                            options);
  }
  if (hint) {
    return silu_in
               ? launch_nt<2, true, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream, options)
               : launch_nt<2, false, true>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream,
                                           options);
  }
  return silu_in
             ? launch_nt<2, true, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream, options)
             : launch_nt<2, false, false>(x, rows, in, w, out, y, y_fp32, tiles, splits, ws, prefetch, stream, options);
}

}  // namespace

cudaError_t launch_skinny_gemm(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32,
                               const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream,
                               const LaunchOptions& options) {
  return launch_skinny(x, rows, in, w, out, y, y_fp32, false, ws, num_sms, stream, options, -1);
}

cudaError_t launch_skinny_gemm_silu(const bf16* gate_up, int rows, int in, const bf16* w, int out, void* y, bool y_fp32,
                                    const SkinnyGemmWorkspace& ws, int num_sms, cudaStream_t stream,
                                    const LaunchOptions& options) {
  return launch_skinny(gate_up, rows, in, w, out, y, y_fp32, true, ws, num_sms, stream, options, -1);
}

cudaError_t launch_skinny_gemm_variant(const bf16* x, int rows, int in, const bf16* w, int out, void* y, bool y_fp32,
                                       bool silu_in, const SkinnyGemmWorkspace& ws, int num_sms, int variant,
                                       cudaStream_t stream, const LaunchOptions& options) {
  return launch_skinny(x, rows, in, w, out, y, y_fp32, silu_in, ws, num_sms, stream, options, variant);
}

}  // namespace tandem::backend::cuda
