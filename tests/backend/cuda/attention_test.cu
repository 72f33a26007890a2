// The attention kernels against a plain CPU reference (double precision) over a paged KV cache: prefill
// chunks and decode tokens, block boundaries, head_dim 16/32/64/128, 1 and 8 KV heads, GQA groups wider
// than a tile, the split-KV (flash-decoding) path, the tensor-core prefill kernel, and the decode kernel
// with per-sequence splits as a captured decode step plans them. Skipped where no GPU is visible.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/cuda/attention.cuh"
#include "backend/cuda/kernel_test_util.cuh"

namespace tandem::backend::cuda {
namespace {

// Attention: sequences given as (new tokens, context length).
struct AttentionCase {
  int num_heads, num_kv_heads, head_dim;
  std::vector<std::pair<int, int>> seqs;
  int target_blocks;  // small: no split; large: split keys across blocks
};

class Attention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(Attention, MatchesCpuOverPagedCache) {
  GPU_OR_SKIP();
  const AttentionCase c = GetParam();
  const int d = c.head_dim, block_size = 16, group = c.num_heads / c.num_kv_heads;
  std::mt19937 rng(static_cast<unsigned>(d * 7 + c.num_heads + c.seqs.size()));
  int max_blocks = 0, total_blocks = 0;
  for (auto [q, ctx] : c.seqs) {
    max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
    total_blocks += (ctx + block_size - 1) / block_size;
  }
  const int num_blocks = total_blocks + 3;
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  const int num_seqs = static_cast<int>(c.seqs.size());
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, -1), starts{0}, context, positions;
  for (int s = 0; s < num_seqs; ++s) {
    const auto [q, ctx] = c.seqs[s];
    for (int b = 0; b < (ctx + block_size - 1) / block_size; ++b) {
      tables[static_cast<size_t>(s) * max_blocks + b] = free_blocks.back();
      free_blocks.pop_back();
    }
    for (int i = 0; i < q; ++i) positions.push_back(ctx - q + i);
    starts.push_back(starts.back() + q);
    context.push_back(ctx);
  }
  const int num_tokens = starts.back();
  const size_t kv_size = static_cast<size_t>(c.num_kv_heads) * d;
  const auto pool = random_bf16(static_cast<size_t>(num_blocks) * 2 * block_size * kv_size, rng);
  const int q_stride = (c.num_heads + 2 * c.num_kv_heads) * d;  // as in the fused qkv buffer
  const auto q = random_bf16(static_cast<size_t>(num_tokens) * q_stride, rng, 2.0f);

  // 0: SIMT tiles only; 1: tensor-core prefill tiles (K/V by cp.async, two stages deep).
  for (int mode : {0, 1}) {
    const bool use_mma = mode > 0;
    if (use_mma && d != 64 && d != 128) continue;
    const AttentionPlan plan = plan_attention(starts.data(), context.data(), num_seqs, c.num_heads, c.num_kv_heads,
                                              c.target_blocks, 4096, use_mma);
    if (c.target_blocks > 1000) EXPECT_FALSE(plan.combines.empty()) << "the split path was not exercised";
    DeviceVec<bf16> d_pool(pool), d_q(q), d_out(static_cast<size_t>(num_tokens) * c.num_heads * d);
    DeviceVec<int32_t> d_tables(tables), d_pos(positions);
    DeviceVec<AttentionWorkItem> d_items(plan.items);
    DeviceVec<AttentionCombineItem> d_combines(plan.combines);
    DeviceVec<AttentionWorkItem> d_mma(plan.mma_items);
    DeviceVec<float> d_po(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * d);
    DeviceVec<float> d_pml(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * 2);
    AttentionParams p;
    p.q = d_q.ptr;
    p.q_row_stride = q_stride;
    p.kv_pool = d_pool.ptr;
    p.block_tables = d_tables.ptr;
    p.max_blocks_per_seq = max_blocks;
    p.positions = d_pos.ptr;
    p.out = d_out.ptr;
    p.items = d_items.ptr;
    p.combines = d_combines.ptr;
    p.mma_items = d_mma.ptr;
    p.num_mma_items = static_cast<int>(plan.mma_items.size());
    p.partial_out = d_po.ptr;
    p.partial_ml = d_pml.ptr;
    p.num_items = static_cast<int>(plan.items.size());
    p.num_combines = static_cast<int>(plan.combines.size());
    p.num_heads = c.num_heads;
    p.num_kv_heads = c.num_kv_heads;
    p.head_dim = d;
    p.block_size = block_size;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    CUDA_OK(launch_attention(p, nullptr, kPlain));
    CUDA_OK(cudaDeviceSynchronize());
    const auto got = to_float(d_out.download());

    std::vector<double> want(got.size());
    for (int s = 0; s < num_seqs; ++s) {
      for (int t = starts[s]; t < starts[s + 1]; ++t) {
        const int keys = positions[t] + 1;
        for (int h = 0; h < c.num_heads; ++h) {
          const int kvh = h / group;
          std::vector<double> score(keys);
          double mx = -INFINITY;
          for (int j = 0; j < keys; ++j) {
            const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
            const size_t at = ((static_cast<size_t>(block) * 2) * block_size + off) * kv_size + kvh * d;
            double dot = 0;
            for (int i = 0; i < d; ++i)
              dot += __bfloat162float(q[t * q_stride + h * d + i]) * __bfloat162float(pool[at + i]);
            score[j] = dot / std::sqrt(static_cast<double>(d));
            mx = std::max(mx, score[j]);
          }
          double denom = 0;
          for (auto& v : score) denom += (v = std::exp(v - mx));
          for (int i = 0; i < d; ++i) {
            double acc = 0;
            for (int j = 0; j < keys; ++j) {
              const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
              const size_t at = ((static_cast<size_t>(block) * 2 + 1) * block_size + off) * kv_size + kvh * d;
              acc += score[j] * __bfloat162float(pool[at + i]);
            }
            want[(static_cast<size_t>(t) * c.num_heads + h) * d + i] = acc / denom;
          }
        }
      }
    }
    EXPECT_LT(rel_error(got, want), 8e-3) << (use_mma ? "tensor-core prefill tiles" : "SIMT tiles only") << " (mode "
                                          << mode << "), " << plan.mma_items.size() << " mma tiles";
  }
}

const std::vector<std::pair<int, int>> kMixed = {{1, 1}, {1, 17}, {5, 5}, {16, 16}, {17, 40}, {3, 600}, {1, 33}};
const std::vector<std::pair<int, int>> kLongDecode = {{1, 3000}, {1, 1}, {2, 1025}};
const std::vector<std::pair<int, int>> kLongPrefill = {{200, 700}, {130, 130}, {16, 16}, {64, 97}, {1, 5}};

INSTANTIATE_TEST_SUITE_P(
    Shapes, Attention,
    ::testing::Values(AttentionCase{16, 8, 128, kMixed, 1}, AttentionCase{8, 1, 64, kMixed, 1},
                      AttentionCase{8, 8, 64, kMixed, 1}, AttentionCase{32, 1, 128, kMixed, 1},
                      AttentionCase{4, 2, 16, kMixed, 1}, AttentionCase{4, 1, 32, {{40, 40}, {1, 1}}, 1},
                      AttentionCase{16, 8, 128, kLongDecode, 100000}, AttentionCase{32, 8, 128, kLongDecode, 100000},
                      AttentionCase{8, 1, 64, kMixed, 100000}, AttentionCase{16, 8, 128, kLongPrefill, 1},
                      AttentionCase{32, 8, 128, kLongPrefill, 1}, AttentionCase{64, 1, 64, kLongPrefill, 1},
                      AttentionCase{128, 1, 128, {{20, 20}}, 1}));


// Decode steps as a captured graph plans them: plan_decode_attention with a fixed number of split
// items per tile, of which each sequence uses as many as its context needs, through the decode kernel
// and through the SIMT kernel.
struct DecodeCase {
  int num_heads, num_kv_heads, head_dim;
  std::vector<int> contexts;
  int splits, min_split_keys;
};

class DecodeAttention : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(DecodeAttention, MatchesCpu) {
  GPU_OR_SKIP();
  const DecodeCase c = GetParam();
  const int d = c.head_dim, block_size = 16, group = c.num_heads / c.num_kv_heads;
  std::mt19937 rng(static_cast<unsigned>(d * 13 + c.num_heads * 3 + c.contexts.size() + c.splits));
  const int num_seqs = static_cast<int>(c.contexts.size());
  const int bucket = num_seqs + 2;  // two padding sequences, as in a graph bucket
  int max_blocks = 1, total_blocks = 0;
  for (int ctx : c.contexts) {
    max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
    total_blocks += (ctx + block_size - 1) / block_size;
  }
  const int num_blocks = total_blocks + 2;
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(bucket) * max_blocks, -1), positions(bucket, 0);
  for (int s = 0; s < num_seqs; ++s) {
    for (int b = 0; b < (c.contexts[s] + block_size - 1) / block_size; ++b) {
      tables[static_cast<size_t>(s) * max_blocks + b] = free_blocks.back();
      free_blocks.pop_back();
    }
    positions[s] = c.contexts[s] - 1;
  }
  const size_t kv_size = static_cast<size_t>(c.num_kv_heads) * d;
  const auto pool = random_bf16(static_cast<size_t>(num_blocks) * 2 * block_size * kv_size, rng);
  const int q_stride = (c.num_heads + 2 * c.num_kv_heads) * d;
  const auto q = random_bf16(static_cast<size_t>(bucket) * q_stride, rng, 2.0f);
  const AttentionPlan plan =
      plan_decode_attention(c.contexts.data(), num_seqs, bucket, c.num_heads, c.num_kv_heads, c.splits, c.min_split_keys);
  ASSERT_EQ(plan.items.size(), static_cast<size_t>(bucket) * c.num_kv_heads * c.splits *
                                   ((group + kAttentionRows - 1) / kAttentionRows));

  std::vector<double> want(static_cast<size_t>(num_seqs) * c.num_heads * d);
  for (int s = 0; s < num_seqs; ++s) {
    const int keys = c.contexts[s];
    for (int h = 0; h < c.num_heads; ++h) {
      const int kvh = h / group;
      std::vector<double> score(keys);
      double mx = -INFINITY;
      for (int j = 0; j < keys; ++j) {
        const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
        const size_t at = ((static_cast<size_t>(block) * 2) * block_size + off) * kv_size + kvh * d;
        double dot = 0;
        for (int i = 0; i < d; ++i) dot += __bfloat162float(q[s * q_stride + h * d + i]) * __bfloat162float(pool[at + i]);
        score[j] = dot / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, score[j]);
      }
      double denom = 0;
      for (auto& v : score) denom += (v = std::exp(v - mx));
      for (int i = 0; i < d; ++i) {
        double acc = 0;
        for (int j = 0; j < keys; ++j) {
          const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
          const size_t at = ((static_cast<size_t>(block) * 2 + 1) * block_size + off) * kv_size + kvh * d;
          acc += score[j] * __bfloat162float(pool[at + i]);
        }
        want[(static_cast<size_t>(s) * c.num_heads + h) * d + i] = acc / denom;
      }
    }
  }

  // 0: decode kernel merging its own splits (a captured decode step); 1: decode kernel + combine kernel;
  // 2: SIMT kernel + combine (what groups other than 1, 2, 4 and 8 run).
  for (int mode : {0, 1, 2}) {
    const bool decode_kernel = mode != 2;
    DeviceVec<bf16> d_pool(pool), d_q(q), d_out(static_cast<size_t>(bucket) * c.num_heads * d);
    DeviceVec<int32_t> d_tables(tables), d_pos(positions);
    DeviceVec<AttentionWorkItem> d_items(plan.items);
    DeviceVec<AttentionCombineItem> d_combines(plan.combines);
    DeviceVec<AttentionWorkItem> d_mma(1);
    // NaN-poisoned partials: a combine that reads a split nobody wrote shows up as a NaN.
    DeviceVec<float> d_po(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * d);
    DeviceVec<float> d_pml(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * 2);
    AttentionParams p;
    p.q = d_q.ptr;
    p.q_row_stride = q_stride;
    p.kv_pool = d_pool.ptr;
    p.block_tables = d_tables.ptr;
    p.max_blocks_per_seq = max_blocks;
    p.positions = d_pos.ptr;
    p.out = d_out.ptr;
    p.items = d_items.ptr;
    p.combines = d_combines.ptr;
    p.mma_items = d_mma.ptr;
    p.partial_out = d_po.ptr;
    p.partial_ml = d_pml.ptr;
    p.num_items = static_cast<int>(plan.items.size());
    p.num_combines = static_cast<int>(plan.combines.size());
    p.num_heads = c.num_heads;
    p.num_kv_heads = c.num_kv_heads;
    p.head_dim = d;
    p.block_size = block_size;
    p.scale = 1.0f / std::sqrt(static_cast<float>(d));
    p.decode = decode_kernel;
    DeviceVec<int32_t> d_counters(std::vector<int32_t>(std::max<size_t>(1, plan.combines.size()), 0));
    if (mode == 0 && c.splits > 1) {
      p.combine_counters = d_counters.ptr;
      p.decode_splits = c.splits;
    }
    // Twice: the second launch must find the merge counters reset by the first.
    for (int rep = 0; rep < 2; ++rep) {
      CUDA_OK(launch_attention(p, nullptr, kPlain));
      CUDA_OK(cudaDeviceSynchronize());
      auto got = to_float(d_out.download());
      got.resize(want.size());  // the padding sequences' rows are never written
      EXPECT_LT(rel_error(got, want), 8e-3) << "mode " << mode << " rep " << rep;
    }
    for (int32_t v : d_counters.download()) ASSERT_EQ(v, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeAttention,
    ::testing::Values(DecodeCase{16, 8, 128, {1, 17, 128, 300, 1025}, 32, 32}, DecodeCase{32, 8, 128, {5, 2000, 64}, 4, 32},
                      DecodeCase{16, 8, 128, {1, 33, 700}, 1, 32}, DecodeCase{8, 1, 64, {1, 16, 257, 999}, 8, 64},
                      DecodeCase{8, 8, 64, {3, 100, 513}, 3, 32}, DecodeCase{4, 2, 16, {1, 40, 300}, 5, 32},
                      DecodeCase{4, 1, 32, {2, 77}, 2, 32}, DecodeCase{12, 1, 128, {90, 1}, 4, 32},
                      DecodeCase{32, 8, 128, {4096}, 32, 32}));

}  // namespace
}  // namespace tandem::backend::cuda
