// Attention over the paged KV cache for a ragged batch: one kernel for prefill chunks and decode
// tokens alike (FlashAttention-style: tiles of keys staged in shared memory, online softmax in fp32,
// causal by each query token's position, GQA query heads of one KV head sharing each key load), with
// the context optionally split across thread blocks and merged by a second kernel (flash-decoding), so
// that a few long sequences still fill the GPU.
//
// Three kernels share the work items: for decode steps (one token per sequence, 1/2/4/8 query heads per
// KV head) a decode kernel that keeps the group's queries in registers and streams K/V rows 16 bytes
// per lane straight from the cache; a SIMT kernel (fp32 FMAs from shared memory; any head_dim of
// 16-128; short chunks, other groups, split-KV) and, for prefill chunks of >= 16 tokens with head_dim
// 64/128, a tensor-core kernel (mma.sync m16n8k16 bf16 with fp32 accumulators, 64 query rows per block).
//
// The K/V of this step's tokens must already be in their blocks (launch_qkv_rope_kv_write), so a
// prefix-cached or chunked prefill reads its earlier context exactly like a decode step does.
//
// References: Dao et al., FlashAttention (2022) for the tiling and online softmax; Dao et al.,
// Flash-Decoding (2023) for splitting the keys of one query across blocks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

// Query rows (token, head) one thread block handles: 4 warps of 4 rows.
constexpr int kAttentionRows = 16;

// One thread block's work: some query rows of one sequence that share one KV head, over keys
// [key_begin, key_end). Rows are token-major: row r is token token_begin + r / num_heads, query head
// kv_head * group + head_begin + r % num_heads.
struct AttentionWorkItem {
  int32_t seq;
  int32_t token_begin;  // index into the batch's tokens
  int32_t num_tokens;
  int32_t head_begin;   // first query head within the KV head's group
  int32_t num_heads;    // num_tokens * num_heads <= kAttentionRows
  int32_t kv_head;
  int32_t key_begin;
  int32_t key_end;
  int32_t partial;      // -1: write the normalized output; else this split's slot in the partial buffers
};

// Merges the splits [first_partial, first_partial + num_splits) of one tile into the output.
struct AttentionCombineItem {
  int32_t token_begin;
  int32_t num_tokens;
  int32_t head_begin;
  int32_t num_heads;
  int32_t kv_head;
  int32_t first_partial;
  int32_t num_splits;
};

// Query rows of one tile of the tensor-core prefill kernel: 4 warps of 16 rows (one mma m16 tile each).
constexpr int kAttentionMmaRows = 64;

struct AttentionPlan {
  std::vector<AttentionWorkItem> items;
  // Tiles of kAttentionMmaRows rows for the tensor-core kernel (prefill chunks of >= 16 tokens with
  // head_dim 64 or 128); never split, partial is -1.
  std::vector<AttentionWorkItem> mma_items;
  std::vector<AttentionCombineItem> combines;  // empty when nothing was split
  int num_partials = 0;
  // Every item is one token with all heads of its group (a decode step): the decode kernel may run them.
  bool decode = false;
};

// Tiles the batch and splits the keys of tiles when there are fewer than `target_blocks` tiles, using
// at most `max_partials` partial slots. With use_mma, sequences with at least 16 new tokens go to the
// tensor-core kernel (REQUIRES then: head_dim 64 or 128, num_heads / num_kv_heads <= 64).
// query_starts [num_seqs + 1] and context_lens [num_seqs] are host arrays as in ForwardBatch. Host code only.
AttentionPlan plan_attention(const int32_t* query_starts, const int32_t* context_lens, int num_seqs, int num_heads,
                             int num_kv_heads, int target_blocks, int max_partials, bool use_mma = false);

// The plan of a decode step (one new token per sequence, token s of sequence s) in a fixed shape, for a
// step captured in a CUDA graph: `bucket` sequences (those past num_seqs are padding with no rows), each
// KV head's tiles given exactly `splits` items. A sequence uses as many of them as give each split at
// least min_split_keys keys (chosen from its context length at every step); the rest are marked unused
// and the combine reads only the used ones. Only the items' contents change from step to step, so the
// captured grid sizes stay valid.
AttentionPlan plan_decode_attention(const int32_t* context_lens, int num_seqs, int bucket, int num_heads,
                                    int num_kv_heads, int splits, int min_split_keys = 32);

struct AttentionParams {
  const __nv_bfloat16* q = nullptr;  // query of token t, head h at q + t * q_row_stride + h * head_dim; bf16, device
  int q_row_stride = 0;
  const __nv_bfloat16* kv_pool = nullptr;  // [num_blocks, 2, block_size, num_kv_heads, head_dim] bf16, device (one layer)
  // Instead of kv_pool, an FP8 cache (one layer, device): blocks in backend.h's KvCacheSpec layout, e4m3
  // values and one fp32 scale per (token, KV head) after them. Every kernel reads it directly: a K row's
  // scores are its e4m3 values dotted with q, times its scale; a V row enters the output times its scale.
  const uint8_t* kv_pool_fp8 = nullptr;
  const int32_t* block_tables = nullptr;   // [num_seqs, max_blocks_per_seq] int32, device
  int max_blocks_per_seq = 0;
  const int32_t* positions = nullptr;      // [num_tokens] int32, device
  __nv_bfloat16* out = nullptr;            // [num_tokens, num_heads * head_dim] bf16, device
  const AttentionWorkItem* items = nullptr;      // [num_items], device
  const AttentionCombineItem* combines = nullptr;  // [num_combines], device
  const AttentionWorkItem* mma_items = nullptr;    // [num_mma_items], device
  float* partial_out = nullptr;  // [max_partials, kAttentionRows, head_dim] fp32, device (unnormalized)
  float* partial_ml = nullptr;   // [max_partials, kAttentionRows, 2] fp32, device (running max in log2 units, sum)
  int num_items = 0;
  int num_combines = 0;
  int num_mma_items = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 16, 32, 64 or 128
  int block_size = 0;
  float scale = 0.0f;  // softmax scale, 1 / sqrt(head_dim)
  // The items are decode tiles (AttentionPlan::decode): run them through the register-tiled decode kernel
  // when the group size allows (1, 2, 4 or 8 query heads per KV head).
  bool decode = false;
  // With a plan_decode_attention plan of decode_splits items per tile (> 1) run by the decode kernel: the
  // last split of each tile to finish merges the tile (no combine kernel). [num_combines] int32, device,
  // zero before the launch and left zero; null: the combine kernel merges.
  int32_t* combine_counters = nullptr;
  int decode_splits = 0;
};

// Runs the work items, then the merges. cudaErrorInvalidValue for an unsupported head_dim or shape.
cudaError_t launch_attention(const AttentionParams& p, cudaStream_t stream, const LaunchOptions& options);

}  // namespace tandem::backend::cuda
