// Element-wise and row-wise kernels of the forward pass (see kernels.cuh). Arithmetic is fp32; bf16 is
// only the storage format of activations, weights and the KV cache.
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/warp.cuh"

#include <cuda_fp8.h>

#include <algorithm>
#include <cstddef>

namespace tandem::backend::cuda {
namespace {

// Sum over the block; every thread gets the result. REQUIRES: blockDim.x a multiple of 32, <= 1024.
__device__ float block_sum(float v) {
  __shared__ float partial[32];  // one per warp
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int num_warps = blockDim.x / kWarp;
  v = lane < num_warps ? partial[lane] : 0.0f;
  return warp_sum(v);
}

__global__ void embedding_kernel(const int32_t* token_ids, const bf16* embed, float* residual, int hidden) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const int t = blockIdx.x;
  const bf16* row = embed + static_cast<size_t>(token_ids[t]) * hidden;
  float* out = residual + static_cast<size_t>(t) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[i] = __bfloat162float(row[i]);
}

__global__ void add_rms_norm_kernel(float* residual, const bf16* delta, const bf16* weight, bf16* out, const int32_t* rows,
                                    int hidden, float eps, bool write_residual) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const int r = blockIdx.x;
  const size_t in_row = static_cast<size_t>(rows ? rows[r] : r) * hidden;
  float* x = residual + in_row;
  // Each thread keeps its elements in registers between the two passes when hidden is small enough;
  // otherwise it re-reads them (the row is in L1/L2 by then).
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = x[i];
    if (delta) v += __bfloat162float(delta[in_row + i]);
    if (write_residual) x[i] = v;
    sum_sq += v * v;
  }
  const float scale = rsqrtf(block_sum(sum_sq) / static_cast<float>(hidden) + eps);
  bf16* o = out + static_cast<size_t>(r) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = x[i];
    if (delta && !write_residual) v += __bfloat162float(delta[in_row + i]);
    o[i] = __float2bfloat16(__bfloat162float(weight[i]) * (v * scale));
  }
}

constexpr int kMaxPairsPerLane = 4;  // head_dim <= 256

// Bytes of one FP8 KV block (backend.h's KvCacheSpec::block_bytes for kF8E4M3).
__host__ __device__ inline size_t fp8_kv_block_bytes(int block_size, int num_kv_heads, int head_dim) {
  const size_t bytes = 2ull * block_size * num_kv_heads * head_dim + 2ull * block_size * num_kv_heads * sizeof(float);
  return (bytes + 15) / 16 * 16;
}

// Quantizes one K or V row held by a warp (lo[k], hi[k] are elements lane + 32k and that + half) into
// `dst` [head_dim] e4m3 and `*scale_dst`, as kv_codec.h: scale = amax / 448 (1 for a zero row), e4m3(x / scale).
__device__ void store_fp8_row(const float (&lo)[kMaxPairsPerLane], const float (&hi)[kMaxPairsPerLane], int lane, int half,
                              uint8_t* dst, float* scale_dst) {
  float amax = 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    if (lane + k * kWarp < half) amax = fmaxf(amax, fmaxf(fabsf(lo[k]), fabsf(hi[k])));
  }
  amax = warp_max(amax);
  const float scale = amax > 0.0f && isfinite(amax) ? amax / 448.0f : 1.0f;
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int i = lane + k * kWarp;
    if (i < half) {
      dst[i] = __nv_cvt_float_to_fp8(lo[k] / scale, __NV_SATFINITE, __NV_E4M3);
      dst[i + half] = __nv_cvt_float_to_fp8(hi[k] / scale, __NV_SATFINITE, __NV_E4M3);
    }
  }
  if (lane == 0) *scale_dst = scale;
}

__global__ void qkv_rope_kv_write_kernel(QkvParams p) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const int t = blockIdx.x;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, num_warps = blockDim.x / kWarp;
  const int d = p.head_dim, half = d / 2;
  const int total_heads = p.num_heads + 2 * p.num_kv_heads;
  const size_t stride = static_cast<size_t>(total_heads) * d;
  const int pos = p.positions[t];
  const int slot = p.slots[t];
  const int block = slot / p.block_size, offset = slot % p.block_size;
  const size_t kv_size = static_cast<size_t>(p.num_kv_heads) * d;
  // K of this token at [block, 0, offset, :, :], V at [block, 1, offset, :, :].
  // FP8 cache: the same rows as e4m3 bytes, their scales [2, block_size, num_kv_heads] after the values.
  const bool fp8 = p.kv_pool_fp8 != nullptr;
  bf16* k_dst = fp8 ? nullptr : p.kv_pool + (static_cast<size_t>(block) * 2 * p.block_size + offset) * kv_size;
  bf16* v_dst = fp8 ? nullptr : k_dst + static_cast<size_t>(p.block_size) * kv_size;
  uint8_t* block8 = fp8 ? p.kv_pool_fp8 + static_cast<size_t>(block) * fp8_kv_block_bytes(p.block_size, p.num_kv_heads, d) : nullptr;
  uint8_t* k8_dst = fp8 ? block8 + static_cast<size_t>(offset) * kv_size : nullptr;
  uint8_t* v8_dst = fp8 ? k8_dst + static_cast<size_t>(p.block_size) * kv_size : nullptr;
  float* k_scales = fp8 ? reinterpret_cast<float*>(block8 + 2ull * p.block_size * kv_size) + static_cast<size_t>(offset) * p.num_kv_heads : nullptr;
  float* v_scales = fp8 ? k_scales + static_cast<size_t>(p.block_size) * p.num_kv_heads : nullptr;

  for (int h = warp; h < total_heads; h += num_warps) {
    bf16* x = p.qkv + t * stride + static_cast<size_t>(h) * d;
    const bf16* bias = p.bias ? p.bias + static_cast<size_t>(h) * d : nullptr;
    float lo[kMaxPairsPerLane], hi[kMaxPairsPerLane];
    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxPairsPerLane; ++k) {
      const int i = lane + k * kWarp;
      lo[k] = hi[k] = 0.0f;
      if (i < half) {
        lo[k] = __bfloat162float(x[i]);
        hi[k] = __bfloat162float(x[i + half]);
        if (bias) {
          lo[k] += __bfloat162float(bias[i]);
          hi[k] += __bfloat162float(bias[i + half]);
        }
        sum_sq += lo[k] * lo[k] + hi[k] * hi[k];
      }
    }
    const bool is_q = h < p.num_heads, is_k = !is_q && h < p.num_heads + p.num_kv_heads;
    if (!is_q && !is_k) {  // V: copy into the cache
      const int kv_head = h - p.num_heads - p.num_kv_heads;
      if (fp8) {
        store_fp8_row(lo, hi, lane, half, v8_dst + static_cast<size_t>(kv_head) * d, v_scales + kv_head);
        continue;
      }
      bf16* dst = v_dst + static_cast<size_t>(kv_head) * d;
#pragma unroll
      for (int k = 0; k < kMaxPairsPerLane; ++k) {
        const int i = lane + k * kWarp;
        if (i < half) {
          dst[i] = __float2bfloat16(lo[k]);
          dst[i + half] = __float2bfloat16(hi[k]);
        }
      }
      continue;
    }
    const bf16* norm = is_q ? p.q_norm : p.k_norm;
    float scale = 1.0f;
    if (norm) scale = rsqrtf(warp_sum(sum_sq) / static_cast<float>(d) + p.eps);
    const bool k_fp8 = is_k && fp8;
    bf16* dst = is_q ? x : (k_fp8 ? nullptr : k_dst + static_cast<size_t>(h - p.num_heads) * d);
#pragma unroll
    for (int k = 0; k < kMaxPairsPerLane; ++k) {
      const int i = lane + k * kWarp;
      if (i < half) {
        float a = lo[k], b = hi[k];
        if (norm) {
          a = __bfloat162float(norm[i]) * (a * scale);
          b = __bfloat162float(norm[i + half]) * (b * scale);
        }
        // transformers forms the angle as an fp32 product (position * inv_freq) before cos/sin.
        float sin_a, cos_a;
        sincosf(static_cast<float>(pos) * p.inv_freq[i], &sin_a, &cos_a);
        lo[k] = a * cos_a - b * sin_a;
        hi[k] = b * cos_a + a * sin_a;
        if (!k_fp8) {
          dst[i] = __float2bfloat16(lo[k]);
          dst[i + half] = __float2bfloat16(hi[k]);
        }
      }
    }
    if (k_fp8) {
      const int kv_head = h - p.num_heads;
      store_fp8_row(lo, hi, lane, half, k8_dst + static_cast<size_t>(kv_head) * d, k_scales + kv_head);
    }
  }
}

__global__ void silu_and_mul_kernel(const bf16* gate_up, bf16* out, int num_tokens, int inter) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const size_t total = static_cast<size_t>(num_tokens) * inter;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t t = idx / inter, i = idx % inter;
    const float g = __bfloat162float(gate_up[t * 2 * inter + i]);
    const float u = __bfloat162float(gate_up[t * 2 * inter + inter + i]);
    out[idx] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
  }
}

__global__ void argmax_kernel(const float* logits, int32_t* tokens, int vocab) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const float* row = logits + static_cast<size_t>(blockIdx.x) * vocab;
  float best = -INFINITY;
  int best_index = vocab;  // "none yet": loses every tie
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v > best) {  // strided ascending scan: the first maximum of this thread wins
      best = v;
      best_index = i;
    }
  }
  __shared__ float best_s[32];
  __shared__ int index_s[32];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  auto better = [](float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); };
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int i = __shfl_xor_sync(0xffffffffu, best_index, offset);
    if (better(v, i, best, best_index)) {
      best = v;
      best_index = i;
    }
  }
  if (lane == 0) {
    best_s[warp] = best;
    index_s[warp] = best_index;
  }
  __syncthreads();
  if (warp == 0) {
    const int num_warps = blockDim.x / kWarp;
    best = lane < num_warps ? best_s[lane] : -INFINITY;
    best_index = lane < num_warps ? index_s[lane] : vocab;
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      const float v = __shfl_xor_sync(0xffffffffu, best, offset);
      const int i = __shfl_xor_sync(0xffffffffu, best_index, offset);
      if (better(v, i, best, best_index)) {
        best = v;
        best_index = i;
      }
    }
    // A row of NaN/-inf only: token 0, as the host argmax gives.
    if (lane == 0) tokens[blockIdx.x] = best_index < vocab ? best_index : 0;
  }
}

// One CTA per (pair, layer). Each thread keeps kCopyUnroll 16-byte loads in flight before it stores
// them: with one load per thread the copy waited on memory latency and reached about half of cudaMemcpy
// (bench/kv_transfer_bench, H100: 737 GB/s vs 1478 GB/s for a 512 MiB prompt's KV). On an H200 it
// reaches ~1.6 TB/s, ~78% of cudaMemcpy; 16 loads in flight, 4 layers a CTA (the block ids read once)
// and streaming cache hints did no better, and cudaMemcpyBatchAsync with one copy per block and layer
// ran at 15 GB/s (bench/results/2026-11-28-h200/).
constexpr int kCopyUnroll = 4;
__global__ void copy_kv_blocks_kernel(const std::byte* __restrict__ src, size_t src_stride, std::byte* __restrict__ dst,
                                      size_t dst_stride, size_t block_vectors, const int32_t* __restrict__ src_ids,
                                      const int32_t* __restrict__ dst_ids) {
  pdl_trigger();
  pdl_wait();  // everything below may read what the previous kernel wrote
  const int pair = blockIdx.x, layer = blockIdx.y;
  const uint4* __restrict__ from =
      reinterpret_cast<const uint4*>(src + layer * src_stride) + static_cast<size_t>(src_ids[pair]) * block_vectors;
  uint4* __restrict__ to = reinterpret_cast<uint4*>(dst + layer * dst_stride) + static_cast<size_t>(dst_ids[pair]) * block_vectors;
  const size_t step = static_cast<size_t>(blockDim.x) * kCopyUnroll;
  for (size_t base = threadIdx.x; base < block_vectors; base += step) {
    uint4 v[kCopyUnroll];
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const size_t i = base + static_cast<size_t>(u) * blockDim.x;
      if (i < block_vectors) v[u] = __ldg(from + i);
    }
#pragma unroll
    for (int u = 0; u < kCopyUnroll; ++u) {
      const size_t i = base + static_cast<size_t>(u) * blockDim.x;
      if (i < block_vectors) to[i] = v[u];
    }
  }
}

}  // namespace

cudaError_t launch_argmax(const float* logits, int32_t* tokens, int num_rows, int vocab, cudaStream_t stream,
                          const LaunchOptions& options) {
  if (num_rows < 0 || vocab <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  return launch_kernel(argmax_kernel, dim3(num_rows), dim3(1024), 0, stream, options, logits, tokens, vocab);
}

cudaError_t launch_copy_kv_blocks(const void* src, size_t src_layer_stride_bytes, void* dst,
                                  size_t dst_layer_stride_bytes, size_t block_bytes, const int32_t* src_ids,
                                  const int32_t* dst_ids, int num_pairs, int num_layers, cudaStream_t stream,
                                  const LaunchOptions& options) {
  if (block_bytes % 16 != 0 || src_layer_stride_bytes % 16 != 0 || dst_layer_stride_bytes % 16 != 0 || num_pairs < 0 ||
      num_layers <= 0 || num_layers > 65535) {
    return cudaErrorInvalidValue;
  }
  if (num_pairs == 0) return cudaSuccess;
  return launch_kernel(copy_kv_blocks_kernel, dim3(num_pairs, num_layers), dim3(256), 0, stream, options,
                       static_cast<const std::byte*>(src), src_layer_stride_bytes, static_cast<std::byte*>(dst),
                       dst_layer_stride_bytes, block_bytes / 16, src_ids, dst_ids);
}

cudaError_t launch_embedding(const int32_t* token_ids, const bf16* embed, float* residual, int num_tokens, int hidden,
                             cudaStream_t stream, const LaunchOptions& options) {
  if (num_tokens < 0 || hidden <= 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  return launch_kernel(embedding_kernel, dim3(num_tokens), dim3(256), 0, stream, options, token_ids, embed, residual,
                       hidden);
}

cudaError_t launch_add_rms_norm(float* residual, const bf16* delta, const bf16* weight, bf16* out, const int32_t* rows,
                                int num_rows, int hidden, float eps, bool write_residual, cudaStream_t stream,
                                const LaunchOptions& options) {
  if (num_rows < 0 || hidden <= 0) return cudaErrorInvalidValue;
  if (num_rows == 0) return cudaSuccess;
  const int threads = hidden >= 1024 ? 512 : (hidden >= 256 ? 256 : 64);
  return launch_kernel(add_rms_norm_kernel, dim3(num_rows), dim3(threads), 0, stream, options, residual, delta, weight,
                       out, rows, hidden, eps, write_residual);
}

cudaError_t launch_qkv_rope_kv_write(const QkvParams& p, cudaStream_t stream, const LaunchOptions& options) {
  if (p.num_tokens < 0 || p.head_dim <= 0 || p.head_dim % 2 != 0 || p.head_dim > 2 * kWarp * kMaxPairsPerLane ||
      p.num_heads <= 0 || p.num_kv_heads <= 0 || p.block_size <= 0) {
    return cudaErrorInvalidValue;
  }
  if (p.num_tokens == 0) return cudaSuccess;
  // One warp per head when there are few tokens (a decode step's kernel is all latency), 8 otherwise.
  const int heads = p.num_heads + 2 * p.num_kv_heads;
  const int threads = p.num_tokens <= 16 ? std::min(1024, kWarp * heads) : 256;
  return launch_kernel(qkv_rope_kv_write_kernel, dim3(p.num_tokens), dim3(threads), 0, stream, options, p);
}

cudaError_t launch_silu_and_mul(const bf16* gate_up, bf16* out, int num_tokens, int inter, cudaStream_t stream,
                                const LaunchOptions& options) {
  if (num_tokens < 0 || inter <= 0) return cudaErrorInvalidValue;
  if (num_tokens == 0) return cudaSuccess;
  const size_t total = static_cast<size_t>(num_tokens) * inter;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + threads - 1) / threads, 132 * 16));
  return launch_kernel(silu_and_mul_kernel, dim3(blocks), dim3(threads), 0, stream, options, gate_up, out, num_tokens,
                       inter);
}

}  // namespace tandem::backend::cuda
