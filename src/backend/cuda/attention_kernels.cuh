// What the attention kernels' files share (attention.cu, decode_attention.cu, prefill_attention.cu):
// the block shape and the per-kind launchers that launch_attention (attention.cu) dispatches to.
// Internal to the CUDA backend; see attention.cuh for the work items and parameters.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

constexpr int kWarps = 4;  // warps per thread block of every attention kernel
constexpr float kLog2e = 1.4426950408889634f;  // scores are kept in log2 units, so exp2f does the exponentials

// Reading the FP8 KV cache (AttentionParams::kv_pool_fp8): where key `key` of KV head `kv_head` lies in
// block `block` of a layer, and 8 e4m3 values as floats (e4m3 -> fp16 is exact, as is fp16 -> fp32).
struct Fp8KvRow {
  const uint8_t* k;  // [D] e4m3 of the key; its V row is v
  const uint8_t* v;
  const float* k_scale;
  const float* v_scale;
};
template <int D>
__device__ __forceinline__ Fp8KvRow fp8_kv_row(const AttentionParams& p, int block, int offset, int kv_head) {
  const size_t kv_size = static_cast<size_t>(p.num_kv_heads) * D;
  const size_t values = 2ull * p.block_size * kv_size;
  const size_t block_bytes = (values + 2ull * p.block_size * p.num_kv_heads * sizeof(float) + 15) / 16 * 16;
  const uint8_t* base = p.kv_pool_fp8 + static_cast<size_t>(block) * block_bytes;
  const size_t row = static_cast<size_t>(offset) * p.num_kv_heads + kv_head;
  const float* scales = reinterpret_cast<const float*>(base + values);
  return {base + row * D, base + row * D + static_cast<size_t>(p.block_size) * kv_size, scales + row,
          scales + row + static_cast<size_t>(p.block_size) * p.num_kv_heads};
}
__device__ __forceinline__ void fp8x8_to_float(uint2 raw, float (&out)[8]) {
  const uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw pair =
          __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(words[w] >> (16 * h)), __NV_E4M3);
      const float2 f = __half22float2(__half2(pair));
      out[4 * w + 2 * h] = f.x;
      out[4 * w + 2 * h + 1] = f.y;
    }
  }
}

// Whether the decode kernel takes tiles of `group` query heads per KV head (1, 2, 4 or 8).
inline bool decode_attention_supports(int group) { return group == 1 || group == 2 || group == 4 || group == 8; }

// The p.num_items decode tiles through the decode kernel (decode_attention.cu). REQUIRES: p.decode,
// decode_attention_supports(p.num_heads / p.num_kv_heads), p.num_items > 0. When p.combine_counters is set
// and p.decode_splits > 0, the last split of each tile merges it (no combine kernel needed).
cudaError_t launch_decode_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options);

// The p.num_mma_items tiles through the tensor-core prefill kernel (prefill_attention.cu).
// cudaErrorInvalidValue unless head_dim is 64 or 128.
cudaError_t launch_prefill_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options);

}  // namespace tandem::backend::cuda
