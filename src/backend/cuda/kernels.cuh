// Element-wise and row-wise kernels of the forward pass (everything but the GEMMs and attention),
// behind plain host launchers. Each launcher checks its sizes, enqueues on `stream` as `options` say
// (launch_options.h) and returns the launch's error (cudaErrorInvalidValue for sizes it does not
// support), so a caller checks it with TANDEM_CUDA_RETURN. All pointers are device pointers unless said
// otherwise.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

using bf16 = __nv_bfloat16;

// residual[t, :] = float(embed[token_ids[t], :]).
//   token_ids [num_tokens] int32; embed [vocab, hidden] bf16; residual [num_tokens, hidden] fp32.
cudaError_t launch_embedding(const int32_t* token_ids, const bf16* embed, float* residual, int num_tokens, int hidden,
                             cudaStream_t stream, const LaunchOptions& options);

// For each output row r (input row i = rows ? rows[r] : r):
//   x = residual[i] + (delta ? delta[i] : 0); if write_residual: residual[i] = x;
//   out[r] = x * rsqrt(mean(x^2) + eps) * weight        (transformers' LlamaRMSNorm, in fp32)
//   residual [*, hidden] fp32; delta [*, hidden] bf16 or null; weight [hidden] bf16;
//   out [num_rows, hidden] bf16; rows [num_rows] int32 or null.
// REQUIRES: write_residual is false when rows may repeat.
cudaError_t launch_add_rms_norm(float* residual, const bf16* delta, const bf16* weight, bf16* out, const int32_t* rows,
                                int num_rows, int hidden, float eps, bool write_residual, cudaStream_t stream,
                                const LaunchOptions& options);

// What happens to the fused QKV projection of each token before attention, in one pass:
// q/k/v bias added (Qwen2), per-head RMSNorm of q and k (Qwen3), rotate-half RoPE of q and k at the
// token's position (inv_freq already llama3-scaled), then k and v written into the token's KV slot.
struct QkvParams {
  bf16* qkv = nullptr;              // [num_tokens, (num_heads + 2 num_kv_heads) * head_dim] bf16; q, k rewritten in place
  const bf16* bias = nullptr;       // [(num_heads + 2 num_kv_heads) * head_dim] bf16 or null
  const bf16* q_norm = nullptr;     // [head_dim] bf16 or null
  const bf16* k_norm = nullptr;     // [head_dim] bf16 or null
  const float* inv_freq = nullptr;  // [head_dim / 2] fp32
  const int32_t* positions = nullptr;  // [num_tokens] int32
  const int32_t* slots = nullptr;      // [num_tokens] int32: block_id * block_size + offset in block
  bf16* kv_pool = nullptr;  // this layer's [num_blocks, 2, block_size, num_kv_heads, head_dim] bf16
  // Instead of kv_pool, an FP8 cache: this layer's blocks in backend.h's KvCacheSpec layout (e4m3 values,
  // then one fp32 scale per token and KV head); each K/V row is quantized as kv_codec.h says.
  uint8_t* kv_pool_fp8 = nullptr;
  int num_tokens = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  float eps = 1e-6f;
};
cudaError_t launch_qkv_rope_kv_write(const QkvParams& p, cudaStream_t stream, const LaunchOptions& options);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].
//   gate_up [num_tokens, 2 inter] bf16; out [num_tokens, inter] bf16.
cudaError_t launch_silu_and_mul(const bf16* gate_up, bf16* out, int num_tokens, int inter, cudaStream_t stream,
                                const LaunchOptions& options);

// tokens[r] = argmax over logits[r, :] (ties to the lowest index; NaN never wins).
//   logits [num_rows, vocab] fp32; tokens [num_rows] int32.
cudaError_t launch_argmax(const float* logits, int32_t* tokens, int num_rows, int vocab, cudaStream_t stream,
                          const LaunchOptions& options);

// For every layer l in [0, num_layers) and pair i: copies block src_ids[i] of src's layer l onto block
// dst_ids[i] of dst's layer l. Pools are [num_layers] x layer_stride_bytes apart; a block is block_bytes
// (a multiple of 16). src or dst may be a peer's pool mapped through CUDA IPC.
//   src_ids, dst_ids [num_pairs] int32, device.
cudaError_t launch_copy_kv_blocks(const void* src, size_t src_layer_stride_bytes, void* dst,
                                  size_t dst_layer_stride_bytes, size_t block_bytes, const int32_t* src_ids,
                                  const int32_t* dst_ids, int num_pairs, int num_layers, cudaStream_t stream,
                                  const LaunchOptions& options);

}  // namespace tandem::backend::cuda
