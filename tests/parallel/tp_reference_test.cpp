// The CPU tensor-parallel backend against transformers (DESIGN.md §5): at TP 2 and TP 4, every tiny
// fixture gives transformers' greedy tokens and last-position logits within the TP 1 tolerance (1e-4
// relative, fp32). All five fixtures split at 2 and 4 ranks (4 or 8 q heads; intermediate and vocab sizes
// multiples of 4), including the MQA ones, whose one KV head is replicated on every rank. Also: the
// whole-model KV layout the TP backend reads and writes, a failing rank, and shapes that do not split.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <numeric>

#include "backend/backend.h"
#include "backend/cpu/tensor_parallel_backend.h"
#include "backend/reference_decode.h"
#include "common/error.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

using tandem::testing::load_references;
using tandem::testing::relative_error;

std::unique_ptr<model::WeightSource> fixture(const std::string& name) {
  return model::open_weight_source(std::string(TANDEM_TEST_DATA_DIR) + "/models/" + name);
}

std::unique_ptr<Backend> make(const model::WeightSource& weights, int tp, int blocks = 8) {
  BackendOptions options;
  options.num_kv_blocks = blocks;
  options.tensor_parallel_size = tp;
  options.num_threads = 2;
  return create_backend(weights, options);
}

struct Case {
  std::string fixture;
  int tp;
};

class TensorParallelReference : public ::testing::TestWithParam<Case> {};

TEST_P(TensorParallelReference, GreedyTokensAndLogitsMatchTransformers) {
  const auto [name, tp] = GetParam();
  auto weights = fixture(name);
  auto backend = make(*weights, tp);
  auto* tp_backend = dynamic_cast<cpu::TensorParallelCpuBackend*>(backend.get());
  ASSERT_NE(tp_backend, nullptr);
  EXPECT_EQ(tp_backend->world_size(), tp);
  EXPECT_EQ(backend->kv_cache_spec().num_kv_heads, weights->config().num_kv_heads);
  auto references = load_references(name);
  ASSERT_EQ(references.size(), 4u);
  for (const auto& ref : references) {
    auto result = reference_greedy_decode(*backend, ref.ids, static_cast<int>(ref.greedy.size()));
    ASSERT_TRUE(result.ok()) << result.status().to_string();
    EXPECT_LT(relative_error(result->prefill_logits, ref.last_logits), 1e-4) << name << " tp " << tp << " prompt of " << ref.ids.size();
    EXPECT_EQ(result->tokens, ref.greedy) << name << " tp " << tp << " prompt of " << ref.ids.size();
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* name : {"llama_gqa_rope3", "llama_mqa_tied_bf16", "qwen2_gqa_tied_fp16", "qwen3_gqa", "qwen3_mqa_tied_bf16"}) {
    for (int tp : {2, 4}) out.push_back({name, tp});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelReference, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.fixture + "_tp" + std::to_string(info.param.tp); });

// Fills blocks 0.. with a prompt's KV by one prefill step.
void prefill(Backend& backend, const std::vector<int32_t>& prompt, std::vector<float>* logits) {
  const int blocks = backend.kv_cache_spec().num_blocks;
  std::vector<int32_t> positions(prompt.size()), table(blocks);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(table.begin(), table.end(), 0);
  const int32_t query_starts[2] = {0, static_cast<int32_t>(prompt.size())};
  const int32_t context_lens[1] = {static_cast<int32_t>(prompt.size())};
  const int32_t logits_index[1] = {static_cast<int32_t>(prompt.size()) - 1};
  logits->resize(backend.config().vocab_size);
  ForwardBatch batch{prompt, positions, query_starts, context_lens, table, blocks, logits_index};
  ASSERT_TRUE(backend.forward(batch, *logits).ok());
}

std::vector<float> read_block(Backend& backend, int layer, int block) {
  std::vector<float> out(backend.kv_cache_spec().block_elements());
  EXPECT_TRUE(backend.read_kv_block(layer, block, std::as_writable_bytes(std::span<float>(out))).ok());
  return out;
}

// The TP backend's KV blocks are the whole model's layout: after the same prefill they equal TP 1's,
// and KV written into a TP 4 backend block by block from TP 1 (as a transfer would) decodes to TP 1's
// tokens. GQA with KV heads split (qwen3_gqa at 2) and MQA with the head replicated (at 4).
TEST(TensorParallelKv, BlocksUseTheWholeModelsLayoutAtAnyTpSize) {
  for (const auto& [name, tp] : std::vector<Case>{{"qwen3_gqa", 2}, {"llama_mqa_tied_bf16", 4}}) {
    auto weights = fixture(name);
    auto one = make(*weights, 1);
    auto many = make(*weights, tp);
    ASSERT_EQ(one->kv_cache_spec().block_bytes(), many->kv_cache_spec().block_bytes());
    const std::vector<int32_t> prompt = load_references(name)[0].ids;
    std::vector<float> logits_one, logits_many;
    prefill(*one, prompt, &logits_one);
    prefill(*many, prompt, &logits_many);
    const int used_blocks = (static_cast<int>(prompt.size()) + 15) / 16;
    for (int layer = 0; layer < weights->config().num_layers; ++layer) {
      for (int block = 0; block < used_blocks; ++block) {
        EXPECT_LT(relative_error(read_block(*many, layer, block), read_block(*one, layer, block)), 1e-5) << name << " layer " << layer;
      }
    }
    // TP 1's KV into a fresh TP backend; decoding on from there matches TP 1 decoding on.
    auto fresh = make(*weights, tp);
    for (int layer = 0; layer < weights->config().num_layers; ++layer) {
      for (int block = 0; block < used_blocks; ++block) {
        std::vector<float> b = read_block(*one, layer, block);
        ASSERT_TRUE(fresh->write_kv_block(layer, block, std::as_bytes(std::span<const float>(b))).ok());
        EXPECT_EQ(read_block(*fresh, layer, block), b);
      }
    }
    const int32_t next = argmax(logits_one);
    const int context = static_cast<int>(prompt.size()) + 1;
    std::vector<int32_t> table(8);
    std::iota(table.begin(), table.end(), 0);
    const int32_t ids[1] = {next}, positions[1] = {context - 1}, query_starts[2] = {0, 1}, context_lens[1] = {context},
                  logits_index[1] = {0};
    ForwardBatch step{ids, positions, query_starts, context_lens, table, 8, logits_index};
    std::vector<float> want(weights->config().vocab_size), got(want.size());
    ASSERT_TRUE(one->forward(step, want).ok());
    ASSERT_TRUE(fresh->forward(step, got).ok());
    EXPECT_LT(relative_error(got, want), 1e-5) << name;
    EXPECT_EQ(argmax(got), argmax(want)) << name;
  }
}

TEST(TensorParallelBackend, AFailingRankFailsTheStepAndLaterStepsWithoutAHang) {
  auto weights = fixture("qwen3_gqa");
  // The TP backend injects the fault into its last rank only: the others are in a collective by then.
  setenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP", "2", 1);
  std::unique_ptr<Backend> backend = make(*weights, 4);
  unsetenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  auto run = std::async(std::launch::async, [&] { return reference_greedy_decode(*backend, {1, 2, 3}, 4); });
  ASSERT_EQ(run.wait_for(std::chrono::seconds(60)), std::future_status::ready) << "a rank is left waiting";
  auto result = run.get();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInternal);
  EXPECT_NE(result.status().message().find("injected device fault"), std::string::npos) << result.status().message();
  EXPECT_FALSE(backend->device_health().ok());
  // Sticky, as a lost device: the next step fails at once.
  auto again = reference_greedy_decode(*backend, {1, 2, 3}, 1);
  EXPECT_FALSE(again.ok());
}

TEST(TensorParallelBackend, AMalformedBatchIsRefusedWithoutBreakingTheGroup) {
  auto weights = fixture("qwen3_gqa");
  auto backend = make(*weights, 2);
  const int32_t ids[1] = {100000}, positions[1] = {0}, query_starts[2] = {0, 1}, context_lens[1] = {1}, table[1] = {0},
                logits_index[1] = {0};
  std::vector<float> logits(weights->config().vocab_size);
  ForwardBatch bad{ids, positions, query_starts, context_lens, table, 1, logits_index};
  EXPECT_EQ(backend->forward(bad, logits).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(backend->device_health().ok());
  const auto ref = load_references("qwen3_gqa")[0];
  auto result = reference_greedy_decode(*backend, ref.ids, 3);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_EQ(result->tokens, std::vector<int32_t>(ref.greedy.begin(), ref.greedy.begin() + 3));
}

TEST(TensorParallelBackend, ShapesThatDoNotSplitAreRefusedNamingTheFlag) {
  auto weights = fixture("qwen3_gqa");  // 4 q heads
  try {
    make(*weights, 3);
    FAIL() << "TP 3 of 4 heads was accepted";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--tensor-parallel-size 3"), std::string::npos) << message;
    EXPECT_NE(message.find("num_attention_heads (4) is not a multiple of 3"), std::string::npos) << message;
  }
  EXPECT_THROW(make(*weights, 8), Error);
  EXPECT_THROW(make(*weights, 0), Error);
}

// CUDA tensor parallelism takes one GPU a rank: one GPU named for two ranks is refused before any GPU is
// asked (so in builds without CUDA too), naming both flags.
TEST(TensorParallelBackend, CudaDeviceListMustNameOneGpuARank) {
  auto weights = fixture("qwen3_gqa");
  BackendOptions options;
  options.device = "cuda:0";
  options.tensor_parallel_size = 2;
  try {
    create_backend(*weights, options);
    FAIL() << "CUDA TP 2 on one named GPU was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda:0 --tensor-parallel-size 2: names 1 GPU(s) for 2"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tandem::backend
