// The CUDA backend with --kv-cache-dtype fp8 (issue 18) on the tiny fixtures: against bf16 KV on the same
// GPU (last-token logits cosine, teacher-forced and free-running greedy agreement, printed as figures); its
// FP8 blocks read back in the CPU backend's layout; blocks moved between two FP8 backends decode on;
// a ragged chunked batch and graph-captured decode steps match one sequence at a time eagerly; the pool
// sized from memory holds about twice bf16's blocks. Skipped where no GPU is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <numeric>

inline const char* tandem_gpu_test_data_dir() {
  const char* env = std::getenv("TANDEM_TEST_DATA_DIR");
  return env ? env : TANDEM_BUILD_TEST_DATA_DIR;
}

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/kv_codec.h"
#include "backend/reference_decode.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

using tandem::testing::relative_error;

#define GPU_OR_SKIP() \
  if (cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

std::string fixture(const std::string& name) { return std::string(tandem_gpu_test_data_dir()) + "/models/" + name; }

std::unique_ptr<Backend> make(const model::WeightSource& weights, const std::string& device, const std::string& kv_dtype,
                              int num_blocks, bool graphs = true) {
  BackendOptions options;
  options.device = device;
  options.num_kv_blocks = num_blocks;
  options.kv_cache_dtype = kv_dtype;
  options.cuda_graphs = graphs;
  return create_backend(weights, options);
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

// Teacher-forced: the prompt and `path` in one step; how many positions' argmax equal the path's next token.
int forced_agreement(Backend& backend, const std::vector<int32_t>& prompt, const std::vector<int32_t>& path) {
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), path.begin(), path.end() - 1);
  const int len = static_cast<int>(ids.size()), n = static_cast<int>(path.size()), vocab = backend.config().vocab_size;
  const int blocks = (len + backend.kv_cache_spec().block_size - 1) / backend.kv_cache_spec().block_size;
  std::vector<int32_t> table(blocks), positions(len), rows(n);
  std::iota(table.begin(), table.end(), 0);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(rows.begin(), rows.end(), static_cast<int32_t>(prompt.size()) - 1);
  const int32_t starts[2] = {0, len}, ctx[1] = {len};
  std::vector<float> logits(static_cast<size_t>(n) * vocab);
  EXPECT_TRUE(backend.forward({ids, positions, starts, ctx, table, blocks, rows}, logits).ok());
  int equal = 0;
  for (int i = 0; i < n; ++i) equal += argmax(std::span<const float>(logits.data() + static_cast<size_t>(i) * vocab, vocab)) == path[i];
  return equal;
}

class CudaFp8KvAgreement : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFp8KvAgreement, StaysCloseToBf16KvOnTheSameGpu) {
  GPU_OR_SKIP();
  const std::string name = GetParam();
  auto weights = model::open_weight_source(fixture(name));
  auto bf16 = make(*weights, "cuda:0", "bf16", 16);
  auto fp8 = make(*weights, "cuda:0", "fp8", 16);
  ASSERT_EQ(fp8->kv_cache_spec().dtype, model::DType::kF8E4M3);
  double worst_cosine = 1.0;
  int forced = 0, free_running = 0, total = 0;
  for (const auto& ref : tandem::testing::load_references(name)) {
    const int n = static_cast<int>(ref.greedy.size());
    auto want = reference_greedy_decode(*bf16, ref.ids, n).value();
    auto got = reference_greedy_decode(*fp8, ref.ids, n).value();
    worst_cosine = std::min(worst_cosine, cosine(got.prefill_logits, want.prefill_logits));
    int equal = 0;
    while (equal < n && got.tokens[equal] == want.tokens[equal]) ++equal;
    free_running += equal;
    forced += forced_agreement(*fp8, ref.ids, want.tokens);
    total += n;
  }
  std::cout << "[ figures  ] " << name << " GPU fp8 KV vs bf16 KV: last-token logits cosine >= " << worst_cosine
            << ", teacher-forced greedy " << forced << "/" << total << ", free-running " << free_running << "/" << total
            << "\n";
  EXPECT_GE(worst_cosine, 0.98) << name;
  EXPECT_LT(worst_cosine, 1.0) << name << ": FP8 KV changed nothing, so it is not in use";
  EXPECT_GE(forced * 4, total * 3) << name;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFp8KvAgreement,
                         ::testing::Values("llama_gqa_rope3", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16", "qwen3_gqa",
                                           "qwen3_mqa_tied_bf16"));

// The GPU's FP8 blocks are the CPU backend's layout: the prompt's blocks written by each backend, read
// back dequantized by kv_codec, agree within the two backends' rounding (bf16 vs fp32 activations, then
// each its own e4m3 rounding); a wrong layout or scale would be off by ~100%.
TEST(CudaFp8Kv, BlocksAreTheCpuBackendsLayout) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto gpu = make(*weights, "cuda:0", "fp8", 16);
  auto cpu = make(*weights, "cpu", "fp8", 16);
  const KvCacheSpec spec = gpu->kv_cache_spec();
  ASSERT_EQ(spec.block_bytes(), cpu->kv_cache_spec().block_bytes());
  const auto refs = tandem::testing::load_references("qwen3_gqa");
  const std::vector<int32_t>& prompt = refs.back().ids;  // 40 tokens: blocks 0-2
  ASSERT_TRUE(reference_greedy_decode(*gpu, prompt, 0).ok());
  ASSERT_TRUE(reference_greedy_decode(*cpu, prompt, 0).ok());
  std::vector<float> from_gpu, from_cpu;
  std::vector<std::byte> block(spec.block_bytes());
  const int d = spec.head_dim, rows_per_block = 2 * spec.block_size * spec.num_kv_heads;
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    for (auto* backend : {gpu.get(), cpu.get()}) {
      auto& out = backend == gpu.get() ? from_gpu : from_cpu;
      for (int b = 0; b * spec.block_size < static_cast<int>(prompt.size()); ++b) {
        ASSERT_TRUE(backend->read_kv_block(layer, b, block).ok());
        for (int row = 0; row < rows_per_block; ++row) {
          const int slot = (row / spec.num_kv_heads) % spec.block_size;
          if (b * spec.block_size + slot >= static_cast<int>(prompt.size())) continue;
          float scale;
          std::memcpy(&scale, block.data() + spec.scales_offset_bytes() + row * sizeof(float), sizeof(float));
          std::vector<float> x(d);
          dequantize_kv_row_fp8(reinterpret_cast<const uint8_t*>(block.data()) + static_cast<size_t>(row) * d, scale, d, x.data());
          out.insert(out.end(), x.begin(), x.end());
        }
      }
    }
  }
  const double err = relative_error(from_gpu, from_cpu);
  std::cout << "[ figures  ] qwen3_gqa prompt KV, GPU fp8 blocks vs CPU fp8 blocks: rel err " << err << "\n";
  EXPECT_LT(err, 8e-2);
}

// Blocks read from one FP8 backend and written into another (what a KV transfer does) decode on as the
// first backend would.
TEST(CudaFp8Kv, BlocksMovedToAnotherBackendDecodeOn) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto a = make(*weights, "cuda:0", "fp8", 16);
  auto b = make(*weights, "cuda:0", "fp8", 16);
  std::vector<int32_t> prompt = {5, 9, 200, 17, 3, 3, 44, 81, 120, 7, 66, 2, 90, 91, 92, 93, 94, 95};
  auto expected = reference_greedy_decode(*a, prompt, 6).value();
  std::vector<std::byte> buffer(a->kv_cache_spec().block_bytes());
  for (int layer = 0; layer < a->config().num_layers; ++layer) {
    for (int blk = 0; blk < 2; ++blk) {
      ASSERT_TRUE(a->read_kv_block(layer, blk, buffer).ok());
      ASSERT_TRUE(b->write_kv_block(layer, 10 + blk, buffer).ok());
    }
  }
  std::vector<int32_t> table = {10, 11, 12}, tokens = {prompt.back()}, got;
  int context = static_cast<int>(prompt.size());
  std::vector<float> logits(a->config().vocab_size);
  for (int step = 0; step < 6; ++step) {
    const int32_t pos = context - 1, starts[2] = {0, 1}, ctx[1] = {context}, rows[1] = {0};
    ASSERT_TRUE(b->forward(ForwardBatch{tokens, std::span<const int32_t>(&pos, 1), starts, ctx, table, 3, rows}, logits).ok());
    got.push_back(argmax(logits));
    tokens = {got.back()};
    ++context;
  }
  EXPECT_EQ(got, expected.tokens);
}

// Several sequences in one batch, prefills chunked (the SIMT and tensor-core kernels over FP8 context)
// and decode steps (the decode kernel, split over long contexts), eager and graph-captured: each
// sequence's path as it is alone, eagerly.
TEST(CudaFp8Kv, RaggedBatchesAndGraphsMatchOneSequenceAtATime) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  const int vocab = weights->config().vocab_size, num_new = 10;
  const std::vector<int> prompt_lens = {1, 17, 45, 100, 300};
  std::vector<std::vector<int32_t>> prompts;
  uint32_t x = 7;
  for (int len : prompt_lens) {
    std::vector<int32_t> p;
    for (int t = 0; t < len; ++t) p.push_back(static_cast<int32_t>((x = x * 1664525u + 1013904223u) >> 8) % vocab);
    prompts.push_back(p);
  }
  std::vector<ReferenceDecodeResult> alone;
  {
    auto solo = make(*weights, "cuda:0", "fp8", 32, /*graphs=*/false);
    for (const auto& p : prompts) alone.push_back(reference_greedy_decode(*solo, p, num_new).value());
  }
  for (bool graphs : {false, true}) {
    for (int chunk : {7, 1000}) {
      auto gpu = make(*weights, "cuda:0", "fp8", 160, graphs);
      const int blocks_per_seq = 32;
      std::vector<std::vector<int32_t>> tokens = prompts;
      std::vector<int> computed(prompts.size(), 0);
      std::vector<std::vector<float>> first(prompts.size());
      for (int step = 0; step < 200; ++step) {
        std::vector<int32_t> ids, positions, starts{0}, context, tables, rows;
        std::vector<size_t> which;
        for (size_t i = 0; i < prompts.size(); ++i) {
          if (tokens[i].size() >= prompts[i].size() + num_new) continue;
          const int take = std::min<int>(chunk, static_cast<int>(tokens[i].size()) - computed[i]);
          for (int k = 0; k < take; ++k) {
            ids.push_back(tokens[i][computed[i] + k]);
            positions.push_back(computed[i] + k);
          }
          starts.push_back(static_cast<int32_t>(ids.size()));
          context.push_back(computed[i] + take);
          rows.push_back(static_cast<int32_t>(ids.size()) - 1);
          for (int b = 0; b < blocks_per_seq; ++b) tables.push_back(static_cast<int32_t>(i) * blocks_per_seq + b);
          which.push_back(i);
        }
        if (which.empty()) break;
        std::vector<float> logits(rows.size() * vocab);
        ASSERT_TRUE(gpu->forward({ids, positions, starts, context, tables, blocks_per_seq, rows}, logits).ok());
        for (size_t r = 0; r < which.size(); ++r) {
          const size_t i = which[r];
          computed[i] = context[r];
          if (computed[i] < static_cast<int>(tokens[i].size())) continue;
          std::vector<float> row(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
          if (first[i].empty()) first[i] = row;
          tokens[i].push_back(argmax(row));
        }
      }
      for (size_t i = 0; i < prompts.size(); ++i) {
        const std::vector<int32_t> got(tokens[i].begin() + prompt_lens[i], tokens[i].end());
        EXPECT_EQ(got, alone[i].tokens) << "sequence " << i << " chunk " << chunk << " graphs " << graphs;
        EXPECT_LT(relative_error(first[i], alone[i].prefill_logits), 2e-2) << "sequence " << i << " chunk " << chunk;
      }
    }
  }
}

TEST(CudaFp8Kv, PoolFromMemoryHoldsAboutTwiceTheBlocksOfBf16) {
  GPU_OR_SKIP();
  auto weights = model::open_weight_source(fixture("qwen3_gqa"));
  auto blocks = [&](const std::string& dtype) {
    BackendOptions options;
    options.device = "cuda:0";
    options.gpu_memory_utilization = 0.1;
    options.kv_cache_dtype = dtype;
    return create_backend(*weights, options)->kv_cache_spec().num_blocks;
  };
  const double bf16 = blocks("bf16"), fp8 = blocks("fp8");
  std::cout << "[ figures  ] qwen3_gqa (head_dim 32) blocks at 10% of free memory: bf16 " << bf16 << ", fp8 " << fp8
            << " (x" << fp8 / bf16 << ")\n";
  // A row of 32 e4m3 bytes carries a 4-byte scale: 64 / 36 = 1.78 (head_dim 128: 256 / 132 = 1.94).
  EXPECT_NEAR(fp8 / bf16, 64.0 / 36.0, 0.05);
}

}  // namespace
}  // namespace tandem::backend
