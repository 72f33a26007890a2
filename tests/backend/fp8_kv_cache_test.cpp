// The FP8 KV cache on the CPU backend (issue 18, --kv-cache-dtype fp8): the row codec (scale = amax / 448,
// e4m3 rounding), the block layout and sizes, greedy agreement and logits of FP8 (and bf16) KV against the
// fp32 KV reference on every tiny fixture, the tensor-parallel backend's block merge with the scales, and
// the measurement behind the choice of one scale per (token, KV head) (docs/quantization.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "backend/kv_codec.h"
#include "backend/reference_decode.h"
#include "common/error.h"
#include "model/fp8.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

using model::DType;
using tandem::testing::relative_error;

std::string fixture_dir(const std::string& name) { return std::string(TANDEM_TEST_DATA_DIR) + "/models/" + name; }

std::unique_ptr<Backend> make_backend(const model::WeightSource& weights, const std::string& kv_dtype, int tp = 1) {
  BackendOptions options;
  options.num_kv_blocks = 8;
  options.kv_cache_dtype = kv_dtype;
  options.tensor_parallel_size = tp;
  return create_backend(weights, options);
}

TEST(KvCodec, ScaleMapsTheLargestValueTo448AndRoundTripsWithinFp8Precision) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(128);
  for (float& v : x) v = normal(rng);
  x[17] = -25.0f;  // the amax
  std::vector<uint8_t> q(x.size());
  const float scale = quantize_kv_row_fp8(x.data(), static_cast<int>(x.size()), q.data());
  EXPECT_FLOAT_EQ(scale, 25.0f / 448.0f);
  EXPECT_EQ(q[17], model::float_to_e4m3(-448.0f));
  std::vector<float> back(x.size());
  dequantize_kv_row_fp8(q.data(), scale, static_cast<int>(x.size()), back.data());
  for (size_t i = 0; i < x.size(); ++i) {
    // e4m3 keeps 3 mantissa bits: half an ulp is 1/16 of the value; below 2^-6 * scale the grid is uniform.
    EXPECT_LE(std::fabs(back[i] - x[i]), std::max(std::fabs(x[i]) / 16.0f, scale * 0x1p-10f)) << i;
  }
}

TEST(KvCodec, AllZeroRowHasScaleOne) {
  std::vector<float> x(32, 0.0f);
  std::vector<uint8_t> q(32, 0xFF);
  EXPECT_EQ(quantize_kv_row_fp8(x.data(), 32, q.data()), 1.0f);
  for (uint8_t b : q) EXPECT_EQ(b, 0);
}

TEST(KvCodec, BlockBytesFollowTheDtype) {
  KvCacheSpec spec{.num_layers = 2, .num_blocks = 4, .block_size = 16, .num_kv_heads = 8, .head_dim = 128};
  spec.dtype = DType::kBF16;
  EXPECT_EQ(spec.block_bytes(), 2u * 16 * 8 * 128 * 2);
  spec.dtype = DType::kF8E4M3;
  // values, then one fp32 scale per (K or V, token, head): 33,792 bytes against bf16's 65,536 (1.94x blocks).
  EXPECT_EQ(spec.block_bytes(), 2u * 16 * 8 * 128 + 2u * 16 * 8 * 4);
  EXPECT_EQ(spec.scales_offset_bytes(), 2u * 16 * 8 * 128);
  EXPECT_EQ(kv_dtype_name(DType::kF8E4M3), "fp8");
  EXPECT_EQ(resolve_kv_cache_dtype("auto", "cpu"), DType::kF32);
  EXPECT_EQ(resolve_kv_cache_dtype("auto", "cuda:0"), DType::kBF16);
  EXPECT_THROW(resolve_kv_cache_dtype("fp8_e5m2", "cpu"), Error);
}

TEST(KvCodec, CpuPoolFromMemoryHoldsTwiceTheBlocksOfBf16) {
  auto weights = model::open_weight_source(fixture_dir("qwen3_gqa"));
  BackendOptions options;
  options.cpu_kv_cache_bytes = 1 << 20;
  auto blocks = [&](const std::string& dtype) {
    options.kv_cache_dtype = dtype;
    return create_backend(*weights, options)->kv_cache_spec().num_blocks;
  };
  const int f32 = blocks("auto"), bf16 = blocks("bf16"), fp8 = blocks("fp8");
  EXPECT_NEAR(bf16, 2 * f32, 1);
  // head_dim 32: a row of 32 bytes carries a 4-byte scale, so 1.78x bf16's blocks (1.94x at head_dim 128).
  EXPECT_GE(fp8, bf16 * 16 / 9);
  EXPECT_LT(fp8, 2 * bf16);
}

// FP8 and bf16 KV against fp32 KV on the transformers fixtures: the same prompts, their greedy paths.
struct Agreement {
  double logits_error = 0;  // worst relative error of the last prompt position's logits
  int forced_equal = 0;     // teacher-forced: positions whose argmax equals the fp32-KV path's next token
  int free_equal = 0;       // free-running: greedy tokens equal before the first difference, summed
  int tokens_total = 0;
};

Agreement compare_to_fp32_kv(const std::string& name, const std::string& kv_dtype) {
  auto weights = model::open_weight_source(fixture_dir(name));
  auto reference = make_backend(*weights, "auto");
  auto tested = make_backend(*weights, kv_dtype);
  const int vocab = weights->config().vocab_size;
  Agreement a;
  for (const auto& ref : tandem::testing::load_references(name)) {
    const int n = static_cast<int>(ref.greedy.size());
    auto want = reference_greedy_decode(*reference, ref.ids, n);
    auto got = reference_greedy_decode(*tested, ref.ids, n);
    TANDEM_CHECK(want.ok() && got.ok());
    a.logits_error = std::max(a.logits_error, relative_error(got->prefill_logits, want->prefill_logits));
    int equal = 0;
    while (equal < n && got->tokens[equal] == want->tokens[equal]) ++equal;
    a.free_equal += equal;
    a.tokens_total += n;
    // Teacher-forced: the prompt and the fp32-KV path's tokens in one step (each position attends to the
    // KV written in this dtype, its own included, as a decode step would); the argmax at each position
    // against the token the fp32-KV path chose there. One early difference does not hide the rest.
    std::vector<int32_t> ids = ref.ids;
    ids.insert(ids.end(), want->tokens.begin(), want->tokens.end() - 1);
    const int len = static_cast<int>(ids.size()), prompt = static_cast<int>(ref.ids.size());
    const int blocks = (len + tested->kv_cache_spec().block_size - 1) / tested->kv_cache_spec().block_size;
    std::vector<int32_t> table(blocks), positions(len), rows(n);
    std::iota(table.begin(), table.end(), 0);
    std::iota(positions.begin(), positions.end(), 0);
    std::iota(rows.begin(), rows.end(), prompt - 1);
    const int32_t starts[2] = {0, len}, ctx[1] = {len};
    std::vector<float> logits(static_cast<size_t>(n) * vocab);
    TANDEM_CHECK(tested->forward({ids, positions, starts, ctx, table, blocks, rows}, logits).ok());
    for (int i = 0; i < n; ++i) {
      a.forced_equal += argmax(std::span<const float>(logits.data() + static_cast<size_t>(i) * vocab, vocab)) == want->tokens[i];
    }
  }
  return a;
}

class KvDtypeAgreement : public ::testing::TestWithParam<std::string> {};

// Bounds from the measured figures (docs/quantization.md), with headroom. These tiny random models have
// near-ties everywhere (FP8 weights move their logits by 6-19%), so a free-running greedy path diverges
// after a few tokens and the teacher-forced agreement is the figure that says how often FP8 KV changes
// the next token.
TEST_P(KvDtypeAgreement, Fp8AndBf16KvStayCloseToFp32Kv) {
  const std::string name = GetParam();
  const Agreement fp8 = compare_to_fp32_kv(name, "fp8");
  const Agreement bf16 = compare_to_fp32_kv(name, "bf16");
  std::cout << "[ figures  ] " << name << " fp8 KV: logits rel err " << fp8.logits_error << ", teacher-forced "
            << fp8.forced_equal << "/" << fp8.tokens_total << ", free-running " << fp8.free_equal << "/"
            << fp8.tokens_total << " | bf16 KV: logits rel err " << bf16.logits_error << ", teacher-forced "
            << bf16.forced_equal << "/" << bf16.tokens_total << ", free-running " << bf16.free_equal << "/"
            << bf16.tokens_total << "\n";
  EXPECT_LT(fp8.logits_error, 0.25) << name;
  EXPECT_GT(fp8.logits_error, 0.0) << name << ": FP8 KV changed nothing, so it is not in use";
  EXPECT_GE(fp8.forced_equal, fp8.tokens_total * 3 / 4) << name;
  EXPECT_GE(fp8.free_equal * 6, fp8.tokens_total) << name;
  EXPECT_LT(bf16.logits_error, 0.02) << name;
  EXPECT_GE(bf16.forced_equal, bf16.tokens_total * 9 / 10) << name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KvDtypeAgreement,
                         ::testing::Values("llama_gqa_rope3", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16", "qwen3_gqa",
                                           "qwen3_mqa_tied_bf16"));

// The tensor-parallel backend splits each block by KV head: a block written through it reads back equal,
// the scales' region included, and its prefill matches the single-rank FP8 backend.
TEST(Fp8KvTensorParallel, BlocksRoundTripAndLogitsMatchOneRank) {
  auto weights = model::open_weight_source(fixture_dir("qwen3_gqa"));  // 2 KV heads: one per rank
  auto one = make_backend(*weights, "fp8");
  auto two = make_backend(*weights, "fp8", 2);
  const KvCacheSpec& spec = two->kv_cache_spec();
  ASSERT_EQ(spec.block_bytes(), one->kv_cache_spec().block_bytes());
  std::vector<std::byte> block(spec.block_bytes()), back(spec.block_bytes());
  std::mt19937 rng(3);
  for (auto& b : block) b = static_cast<std::byte>(rng() & 0x7E);  // no NaN codes
  ASSERT_TRUE(two->write_kv_block(1, 2, block).ok());
  ASSERT_TRUE(two->read_kv_block(1, 2, back).ok());
  EXPECT_EQ(block, back);

  const auto refs = tandem::testing::load_references("qwen3_gqa");
  auto a = reference_greedy_decode(*one, refs.back().ids, 4);
  auto b = reference_greedy_decode(*two, refs.back().ids, 4);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(relative_error(b->prefill_logits, a->prefill_logits), 1e-5);
  EXPECT_EQ(b->tokens, a->tokens);
}

// Why one scale per (token, KV head): each fixture's longest prompt is prefilled with fp32 KV; its K/V is
// then quantized to e4m3 under four scale granularities and written back dequantized, and one decode step
// runs over it. The error of the K/V values and of that step's logits against the unquantized KV:
//   tensor-1: one scale of 1.0 for everything (vLLM's default without calibration);
//   tensor:   one scale per layer, the amax of its K (resp. V) over 448 (a calibrated per-tensor scale);
//   block:    one scale per (block, K or V, KV head);
//   token:    one scale per (token, K or V, KV head), what --kv-cache-dtype fp8 does.
TEST(Fp8KvGranularity, PerTokenAndHeadScalesAreTheMostAccurate) {
  enum Granularity { kTensorOne, kTensor, kBlock, kToken, kCount };
  const char* names[kCount] = {"tensor-1", "tensor", "block", "token"};
  double kv_err_sum[kCount] = {}, logits_err_sum[kCount] = {};
  const std::vector<std::string> fixtures = {"llama_gqa_rope3", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16",
                                             "qwen3_gqa", "qwen3_mqa_tied_bf16"};
  for (const std::string& name : fixtures) {
    auto weights = model::open_weight_source(fixture_dir(name));
    auto backend = make_backend(*weights, "auto");
    const KvCacheSpec spec = backend->kv_cache_spec();
    const auto refs = tandem::testing::load_references(name);
    const std::vector<int32_t>& prompt = refs.back().ids;
    const int len = static_cast<int>(prompt.size());
    const int blocks = (len + 1 + spec.block_size - 1) / spec.block_size;
    std::vector<int32_t> table(blocks);
    std::iota(table.begin(), table.end(), 0);
    std::vector<int32_t> positions(len);
    std::iota(positions.begin(), positions.end(), 0);
    std::vector<float> logits(backend->config().vocab_size);
    const int32_t prefill_starts[2] = {0, len}, prefill_ctx[1] = {len}, prefill_row[1] = {len - 1};
    ASSERT_TRUE(backend->forward({prompt, positions, prefill_starts, prefill_ctx, table, blocks, prefill_row}, logits).ok());
    const int32_t next[1] = {refs.back().greedy[0]}, next_pos[1] = {len};
    const int32_t step_starts[2] = {0, 1}, step_ctx[1] = {len + 1}, step_row[1] = {0};
    const ForwardBatch step{next, next_pos, step_starts, step_ctx, table, blocks, step_row};

    // The prompt's KV as written: [layer][block] fp32 blocks.
    const size_t elems = spec.block_elements();
    std::vector<std::vector<std::vector<float>>> kv(spec.num_layers, std::vector<std::vector<float>>(blocks, std::vector<float>(elems)));
    for (int l = 0; l < spec.num_layers; ++l) {
      for (int b = 0; b < blocks; ++b) ASSERT_TRUE(backend->read_kv_block(l, b, std::as_writable_bytes(std::span(kv[l][b]))).ok());
    }
    auto restore = [&](const std::vector<std::vector<std::vector<float>>>& blocks_kv) {
      for (int l = 0; l < spec.num_layers; ++l) {
        for (int b = 0; b < blocks; ++b) ASSERT_TRUE(backend->write_kv_block(l, b, std::as_bytes(std::span(blocks_kv[l][b]))).ok());
      }
    };
    std::vector<float> exact(logits.size());
    ASSERT_TRUE(backend->forward(step, exact).ok());

    const int d = spec.head_dim, heads = spec.num_kv_heads, bs = spec.block_size;
    for (int g = 0; g < kCount; ++g) {
      auto quantized = kv;
      double err2 = 0, ref2 = 0;
      for (int l = 0; l < spec.num_layers; ++l) {
        for (int which = 0; which < 2; ++which) {
          // Rows of this layer's K (or V) in the prompt: (block, slot, head) -> d values.
          auto row = [&](int pos, int h) { return quantized[l][pos / bs].data() + ((static_cast<size_t>(which) * bs + pos % bs) * heads + h) * d; };
          auto amax_of = [&](auto in_group) {
            float m = 0;
            for (int pos = 0; pos < len; ++pos) {
              for (int h = 0; h < heads; ++h) {
                if (!in_group(pos, h)) continue;
                for (int i = 0; i < d; ++i) m = std::max(m, std::fabs(row(pos, h)[i]));
              }
            }
            return m > 0 ? m / model::kE4m3Max : 1.0f;
          };
          const float tensor_scale = amax_of([](int, int) { return true; });
          for (int pos = 0; pos < len; ++pos) {
            for (int h = 0; h < heads; ++h) {
              float* x = row(pos, h);
              float scale = 1.0f;
              if (g == kTensor) scale = tensor_scale;
              if (g == kBlock) scale = amax_of([&](int p, int hh) { return p / bs == pos / bs && hh == h; });
              if (g == kToken) scale = fp8_kv_scale(x, d);
              for (int i = 0; i < d; ++i) {
                const float q = model::e4m3_to_float(model::float_to_e4m3(x[i] / scale)) * scale;
                err2 += (q - x[i]) * (q - x[i]);
                ref2 += x[i] * x[i];
                x[i] = q;
              }
            }
          }
        }
      }
      restore(quantized);
      std::vector<float> got(logits.size());
      ASSERT_TRUE(backend->forward(step, got).ok());
      kv_err_sum[g] += std::sqrt(err2 / ref2);
      logits_err_sum[g] += relative_error(got, exact);
    }
    restore(kv);
  }
  const double n = static_cast<double>(fixtures.size());
  for (int g = 0; g < kCount; ++g) {
    std::cout << "[ figures  ] scales per " << names[g] << ": K/V rel err " << kv_err_sum[g] / n
              << ", decode-step logits rel err " << logits_err_sum[g] / n << " (mean of " << fixtures.size()
              << " fixtures)\n";
  }
  EXPECT_LT(kv_err_sum[kToken], kv_err_sum[kBlock]);
  EXPECT_LT(kv_err_sum[kBlock], kv_err_sum[kTensorOne]);
  EXPECT_LT(logits_err_sum[kToken], logits_err_sum[kTensorOne]);
  EXPECT_LT(logits_err_sum[kToken], logits_err_sum[kTensor]);
}

}  // namespace
}  // namespace tandem::backend
