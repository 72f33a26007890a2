// What the attention kernels' files share (attention.cu, decode_attention.cu, prefill_attention.cu):
// the block shape and the per-kind launchers that launch_attention (attention.cu) dispatches to.
// Internal to the CUDA backend; see attention.cuh for the work items and parameters.
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

constexpr int kWarps = 4;  // warps per thread block of every attention kernel
constexpr float kLog2e = 1.4426950408889634f;  // scores are kept in log2 units, so exp2f does the exponentials

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
