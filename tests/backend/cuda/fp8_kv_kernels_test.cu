// The FP8 KV cache's kernels (issue 18) against double-precision CPU references: the KV write quantizes
// each K/V row with the scale kv_codec.h defines (its largest value lands on +-448) in backend.h's block
// layout; the attention kernels (SIMT, tensor-core prefill, decode with and without its own merge,
// split-KV with the combine kernel) read FP8 blocks built on the host by kv_codec and match attention over
// the dequantized values. Skipped where no GPU is visible.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/kernel_test_util.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/kv_codec.h"

namespace tandem::backend::cuda {
namespace {

KvCacheSpec fp8_spec(int num_blocks, int block_size, int num_kv_heads, int head_dim) {
  KvCacheSpec s;
  s.num_layers = 1;
  s.num_blocks = num_blocks;
  s.block_size = block_size;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = head_dim;
  s.dtype = model::DType::kF8E4M3;
  return s;
}

// Row (which: 0 K, 1 V; slot; head) of block `block` of an FP8 pool: its values and its scale.
const uint8_t* fp8_row(const std::vector<uint8_t>& pool, const KvCacheSpec& s, int block, int which, int slot, int head) {
  const size_t row = (static_cast<size_t>(which) * s.block_size + slot) * s.num_kv_heads + head;
  return pool.data() + static_cast<size_t>(block) * s.block_bytes() + row * s.head_dim;
}
float fp8_scale(const std::vector<uint8_t>& pool, const KvCacheSpec& s, int block, int which, int slot, int head) {
  const size_t row = (static_cast<size_t>(which) * s.block_size + slot) * s.num_kv_heads + head;
  float scale;
  std::memcpy(&scale, pool.data() + static_cast<size_t>(block) * s.block_bytes() + s.scales_offset_bytes() + row * 4, 4);
  return scale;
}

TEST(Fp8KvWrite, QuantizesEachRowWithItsAmaxScale) {
  GPU_OR_SKIP();
  const int num_tokens = 21, num_heads = 16, num_kv_heads = 8, d = 128, half = d / 2, block_size = 16, num_blocks = 4;
  const int total_heads = num_heads + 2 * num_kv_heads;
  const size_t stride = static_cast<size_t>(total_heads) * d;
  std::mt19937 rng(5);
  const auto qkv = random_bf16(num_tokens * stride, rng, 3.0f);
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(10000.0f, 2.0f * i / d);
  std::vector<int32_t> positions(num_tokens), slots(num_tokens), order(num_blocks * block_size);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int t = 0; t < num_tokens; ++t) {
    positions[t] = static_cast<int32_t>(rng() % 3000);
    slots[t] = order[t];
  }
  const KvCacheSpec spec = fp8_spec(num_blocks, block_size, num_kv_heads, d);
  DeviceVec<bf16> d_qkv(qkv);
  DeviceVec<float> d_inv(inv_freq);
  DeviceVec<int32_t> d_pos(positions), d_slots(slots);
  DeviceVec<uint8_t> d_pool(std::vector<uint8_t>(num_blocks * spec.block_bytes(), 0));
  QkvParams p;
  p.qkv = d_qkv.ptr;
  p.inv_freq = d_inv.ptr;
  p.positions = d_pos.ptr;
  p.slots = d_slots.ptr;
  p.kv_pool_fp8 = d_pool.ptr;
  p.num_tokens = num_tokens;
  p.num_heads = num_heads;
  p.num_kv_heads = num_kv_heads;
  p.head_dim = d;
  p.block_size = block_size;
  CUDA_OK(launch_qkv_rope_kv_write(p, nullptr, kPlain));
  CUDA_OK(cudaDeviceSynchronize());
  const auto pool = d_pool.download();

  std::vector<float> got;
  std::vector<double> want;
  for (int t = 0; t < num_tokens; ++t) {
    const int block = slots[t] / block_size, slot = slots[t] % block_size;
    for (int kvh = 0; kvh < num_kv_heads; ++kvh) {
      for (int which = 0; which < 2; ++which) {
        const int h = num_heads + which * num_kv_heads + kvh;
        std::vector<double> x(d);
        for (int i = 0; i < d; ++i) x[i] = __bfloat162float(qkv[t * stride + h * d + i]);
        if (which == 0) {  // K is rotated
          std::vector<double> y(d);
          for (int i = 0; i < half; ++i) {
            const double angle = static_cast<double>(static_cast<float>(positions[t]) * inv_freq[i]);
            y[i] = x[i] * std::cos(angle) - x[i + half] * std::sin(angle);
            y[i + half] = x[i + half] * std::cos(angle) + x[i] * std::sin(angle);
          }
          x = y;
        }
        double amax = 0;
        for (double v : x) amax = std::max(amax, std::fabs(v));
        const float scale = fp8_scale(pool, spec, block, which, slot, kvh);
        EXPECT_NEAR(scale, amax / 448.0, amax / 448.0 * 1e-4) << "token " << t << " head " << kvh << " which " << which;
        std::vector<float> back(d);
        dequantize_kv_row_fp8(fp8_row(pool, spec, block, which, slot, kvh), scale, d, back.data());
        float largest = 0;
        for (int i = 0; i < d; ++i) {
          got.push_back(back[i]);
          want.push_back(x[i]);
          largest = std::max(largest, std::fabs(back[i]));
        }
        EXPECT_FLOAT_EQ(largest, 448.0f * scale);  // the amax element is the top of the e4m3 range
      }
    }
  }
  // e4m3 keeps 3 mantissa bits: ~2-3% relative RMS over a row of normal values.
  EXPECT_LT(rel_error(got, want), 4e-2);
  EXPECT_GT(rel_error(got, want), 1e-3);  // and it is FP8, not bf16
}

// Attention over an FP8 pool: sequences as (new tokens, context length).
struct Fp8AttentionCase {
  int num_heads, num_kv_heads, head_dim;
  std::vector<std::pair<int, int>> seqs;
};

class Fp8Attention : public ::testing::TestWithParam<Fp8AttentionCase> {};

TEST_P(Fp8Attention, EveryKernelMatchesCpuOverTheDequantizedCache) {
  GPU_OR_SKIP();
  const Fp8AttentionCase c = GetParam();
  const int d = c.head_dim, block_size = 16, group = c.num_heads / c.num_kv_heads;
  std::mt19937 rng(static_cast<unsigned>(d * 3 + c.num_heads + c.seqs.size()));
  int max_blocks = 0, total_blocks = 0;
  for (auto [q, ctx] : c.seqs) {
    max_blocks = std::max(max_blocks, (ctx + block_size - 1) / block_size);
    total_blocks += (ctx + block_size - 1) / block_size;
  }
  const int num_blocks = total_blocks + 2;
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  const int num_seqs = static_cast<int>(c.seqs.size());
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, -1), starts{0}, context, positions;
  bool decode_only = true;
  for (int s = 0; s < num_seqs; ++s) {
    const auto [q, ctx] = c.seqs[s];
    for (int b = 0; b < (ctx + block_size - 1) / block_size; ++b) {
      tables[static_cast<size_t>(s) * max_blocks + b] = free_blocks.back();
      free_blocks.pop_back();
    }
    for (int i = 0; i < q; ++i) positions.push_back(ctx - q + i);
    starts.push_back(starts.back() + q);
    context.push_back(ctx);
    decode_only = decode_only && q == 1;
  }
  const int num_tokens = starts.back();

  // The pool: rows of varied magnitude (per-row scales matter), quantized by kv_codec; the reference
  // reads them back dequantized.
  const KvCacheSpec spec = fp8_spec(num_blocks, block_size, c.num_kv_heads, d);
  std::vector<uint8_t> pool(num_blocks * spec.block_bytes(), 0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> deq(static_cast<size_t>(num_blocks) * 2 * block_size * c.num_kv_heads * d);
  for (int b = 0; b < num_blocks; ++b) {
    for (int which = 0; which < 2; ++which) {
      for (int slot = 0; slot < block_size; ++slot) {
        for (int h = 0; h < c.num_kv_heads; ++h) {
          const float magnitude = std::exp2(static_cast<float>(static_cast<int>(rng() % 9) - 4));
          std::vector<float> x(d);
          for (float& v : x) v = normal(rng) * magnitude;
          uint8_t* dst = const_cast<uint8_t*>(fp8_row(pool, spec, b, which, slot, h));
          const float scale = quantize_kv_row_fp8(x.data(), d, dst);
          const size_t row = (static_cast<size_t>(which) * block_size + slot) * c.num_kv_heads + h;
          std::memcpy(pool.data() + static_cast<size_t>(b) * spec.block_bytes() + spec.scales_offset_bytes() + row * 4, &scale, 4);
          dequantize_kv_row_fp8(dst, scale, d, deq.data() + (static_cast<size_t>(b) * 2 * block_size * c.num_kv_heads + row) * d);
        }
      }
    }
  }
  const int q_stride = (c.num_heads + 2 * c.num_kv_heads) * d;
  const auto q = random_bf16(static_cast<size_t>(num_tokens) * q_stride, rng, 2.0f);
  const size_t kv_size = static_cast<size_t>(c.num_kv_heads) * d;
  std::vector<double> want(static_cast<size_t>(num_tokens) * c.num_heads * d);
  for (int s = 0; s < num_seqs; ++s) {
    for (int t = starts[s]; t < starts[s + 1]; ++t) {
      const int keys = positions[t] + 1;
      for (int h = 0; h < c.num_heads; ++h) {
        const int kvh = h / group;
        std::vector<double> score(keys);
        double mx = -INFINITY;
        for (int j = 0; j < keys; ++j) {
          const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
          const float* k = deq.data() + (static_cast<size_t>(block) * 2 * block_size + off) * kv_size + kvh * d;
          double dot = 0;
          for (int i = 0; i < d; ++i) dot += __bfloat162float(q[t * q_stride + h * d + i]) * k[i];
          score[j] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, score[j]);
        }
        double denom = 0;
        for (auto& v : score) denom += (v = std::exp(v - mx));
        for (int i = 0; i < d; ++i) {
          double acc = 0;
          for (int j = 0; j < keys; ++j) {
            const int block = tables[static_cast<size_t>(s) * max_blocks + j / block_size], off = j % block_size;
            acc += score[j] * deq[((static_cast<size_t>(block) * 2 + 1) * block_size + off) * kv_size + kvh * d + i];
          }
          want[(static_cast<size_t>(t) * c.num_heads + h) * d + i] = acc / denom;
        }
      }
    }
  }

  // 0: SIMT tiles; 1: tensor-core prefill tiles; 2: split keys + combine kernel (SIMT, or the decode
  // kernel on decode steps); 3: a captured decode step's plan through the decode kernel merging its splits.
  for (int mode = 0; mode < 4; ++mode) {
    const bool use_mma = mode == 1;
    if (use_mma && d != 64 && d != 128) continue;
    if (mode == 3 && !decode_only) continue;
    AttentionPlan plan = mode == 3 ? plan_decode_attention(context.data(), num_seqs, num_seqs, c.num_heads,
                                                           c.num_kv_heads, 4, 32)
                                   : plan_attention(starts.data(), context.data(), num_seqs, c.num_heads,
                                                    c.num_kv_heads, mode == 2 ? 100000 : 1, 4096, use_mma);
    DeviceVec<uint8_t> d_pool(pool);
    DeviceVec<bf16> d_q(q), d_out(static_cast<size_t>(num_tokens) * c.num_heads * d);
    DeviceVec<int32_t> d_tables(tables), d_pos(positions);
    DeviceVec<AttentionWorkItem> d_items(plan.items);
    DeviceVec<AttentionCombineItem> d_combines(plan.combines);
    DeviceVec<AttentionWorkItem> d_mma(plan.mma_items);
    DeviceVec<float> d_po(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * d);
    DeviceVec<float> d_pml(static_cast<size_t>(std::max(1, plan.num_partials)) * kAttentionRows * 2);
    DeviceVec<int32_t> d_counters(std::vector<int32_t>(std::max<size_t>(1, plan.combines.size()), 0));
    AttentionParams p;
    p.q = d_q.ptr;
    p.q_row_stride = q_stride;
    p.kv_pool_fp8 = d_pool.ptr;
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
    p.decode = plan.decode || mode == 3;
    if (mode == 3) {
      p.combine_counters = d_counters.ptr;
      p.decode_splits = 4;
    }
    CUDA_OK(launch_attention(p, nullptr, kPlain));
    CUDA_OK(cudaDeviceSynchronize());
    const auto got = to_float(d_out.download());
    EXPECT_LT(rel_error(got, want), 8e-3) << "mode " << mode << ", " << plan.mma_items.size() << " mma tiles, "
                                          << plan.combines.size() << " combines, decode " << p.decode;
  }
}

const std::vector<std::pair<int, int>> kMixed = {{1, 1}, {1, 17}, {5, 5}, {16, 16}, {17, 40}, {3, 600}, {40, 70}};
const std::vector<std::pair<int, int>> kDecode = {{1, 1}, {1, 33}, {1, 700}, {1, 1025}};

INSTANTIATE_TEST_SUITE_P(Shapes, Fp8Attention,
                         ::testing::Values(Fp8AttentionCase{16, 8, 128, kMixed}, Fp8AttentionCase{8, 1, 64, kMixed},
                                           Fp8AttentionCase{4, 2, 16, kMixed}, Fp8AttentionCase{4, 1, 32, kMixed},
                                           Fp8AttentionCase{12, 1, 128, kMixed}, Fp8AttentionCase{16, 8, 128, kDecode},
                                           Fp8AttentionCase{32, 8, 128, kDecode}, Fp8AttentionCase{8, 8, 64, kDecode},
                                           Fp8AttentionCase{64, 8, 128, kDecode}));

}  // namespace
}  // namespace tandem::backend::cuda
