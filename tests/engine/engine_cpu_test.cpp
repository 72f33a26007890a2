// The engine on the real CPU backend (random:tiny-qwen3, fp32): greedy outputs in a full batch equal
// the one-sequence reference decoder (backend::reference_greedy_decode, which shares no code with the
// engine); prefix-cache hits, preemption with recompute, and prefill-only + KV copy + decode-from-KV on
// a second engine give the same tokens.
#include <gtest/gtest.h>

#include <random>

#include "backend/backend.h"
#include "backend/reference_decode.h"
#include "engine/engine.h"
#include "model/weight_source.h"
#include "test_util.h"

namespace tandem::engine {
namespace {

using testing::Collector;
using testing::make_request;

class EngineCpu : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    weights_ = model::open_weight_source("random:tiny-qwen3", 0).release();
    // Reference tokens, one sequence at a time on a backend of its own.
    backend::BackendOptions o;
    o.num_kv_blocks = 16;
    o.num_threads = 1;  // no OpenMP spinning against the other tests ctest runs beside these
    auto ref_backend = backend::create_backend(*weights_, o);
    std::mt19937 rng(11);
    const int vocab = weights_->config().vocab_size;
    std::vector<int32_t> shared(40);
    for (auto& t : shared) t = static_cast<int32_t>(rng() % vocab);
    prompts_ = new std::vector<std::vector<int32_t>>();
    expected_ = new std::vector<std::vector<int32_t>>();
    const int lengths[] = {3, 17, 40, 45, 9, 33};
    for (int i = 0; i < 6; ++i) {
      std::vector<int32_t> p;
      for (int j = 0; j < lengths[i]; ++j) p.push_back(i >= 2 && j < 32 ? shared[j] : static_cast<int32_t>(rng() % vocab));
      auto result = backend::reference_greedy_decode(*ref_backend, p, kMaxTokens);
      ASSERT_TRUE(result.ok()) << result.status().to_string();
      prompts_->push_back(p);
      expected_->push_back(result->tokens);
    }
  }
  static void TearDownTestSuite() {
    delete weights_;
    delete prompts_;
    delete expected_;
  }

  static std::unique_ptr<Engine> make(int num_blocks, EngineOptions options = {}) {
    backend::BackendOptions o;
    o.num_kv_blocks = num_blocks;
    o.num_threads = 1;  // no OpenMP spinning against the other tests ctest runs beside these
    return create_engine(backend::create_backend(*weights_, o), options);
  }

  static Request greedy(const std::string& id, int i) {
    Request r = make_request(id, (*prompts_)[i], kMaxTokens);
    r.sampling.ignore_eos = true;  // the reference decoder does not stop at EOS
    return r;
  }

  static constexpr int kMaxTokens = 6;
  static inline model::WeightSource* weights_ = nullptr;
  static inline std::vector<std::vector<int32_t>>* prompts_ = nullptr;
  static inline std::vector<std::vector<int32_t>>* expected_ = nullptr;
};

TEST_F(EngineCpu, GreedyInAFullBatchEqualsTheReferenceRunAlone) {
  EngineOptions options;
  options.enable_prefix_caching = false;
  auto engine = make(128, options);
  Collector collector;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(engine->submit(greedy(std::to_string(i), i), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(6));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(collector.get(std::to_string(i)).tokens, (*expected_)[i]) << "prompt " << i;
}

TEST_F(EngineCpu, PrefixCacheHitsGiveTheSameTokensAsMisses) {
  auto engine = make(128);
  Collector collector;
  ASSERT_TRUE(engine->submit(greedy("first", 2), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  for (int i = 3; i < 6; ++i) ASSERT_TRUE(engine->submit(greedy(std::to_string(i), i), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(4));
  EXPECT_EQ(collector.get("first").tokens, (*expected_)[2]);
  for (int i = 3; i < 6; ++i) {
    auto c = collector.get(std::to_string(i));
    EXPECT_EQ(c.tokens, (*expected_)[i]) << "prompt " << i;
    if (i != 4) {  // prompt 4 is shorter than one shared block
      EXPECT_EQ(c.last.num_cached_prompt_tokens, 32) << "prompt " << i;  // two shared blocks
    }
  }
  EXPECT_GE(engine->stats().prefix_cache_hits, 64);
}

TEST_F(EngineCpu, PreemptionAndRecomputeGiveTheSameTokens) {
  EngineOptions options;
  options.max_batch_tokens = 40;  // chunked prefill as well
  auto engine = make(5, options);  // 80 token slots: prompts 2, 3 and 5 alone need 3 blocks each
  Collector collector;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(engine->submit(greedy(std::to_string(i), i), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(6));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(collector.get(std::to_string(i)).tokens, (*expected_)[i]) << "prompt " << i;
  EXPECT_GT(engine->stats().num_preemptions, 0);
  EXPECT_EQ(engine->stats().num_kv_blocks_used, 0);
}

TEST_F(EngineCpu, PrefillOnlyThenKvCopyThenDecodeFromKvEqualsLocal) {
  auto prefill = make(32), decode = make(32);
  Collector pc, dc;
  for (int i : {1, 3}) {
    const std::string id = "r" + std::to_string(i);
    const auto& prompt = (*prompts_)[i];
    auto reservation = decode->reserve_kv(id, prompt);
    ASSERT_TRUE(reservation.ok()) << reservation.status().to_string();
    Request p = greedy(id, i);
    p.prefill_mode = PrefillMode::kPrefillOnly;
    ASSERT_TRUE(prefill->submit(p, pc.callback()).ok());
    ASSERT_TRUE(pc.wait_finished(i == 1 ? 1 : 2));
    auto first = pc.get(id);
    ASSERT_EQ(first.tokens.size(), 1u);
    const auto& spec = prefill->backend().kv_cache_spec();
    std::vector<std::byte> buffer(spec.block_bytes());
    for (int layer = 0; layer < spec.num_layers; ++layer) {
      for (size_t b = reservation->num_cached_tokens / spec.block_size; b < reservation->block_ids.size(); ++b) {
        ASSERT_TRUE(prefill->backend().read_kv_block(layer, first.last.kv_block_ids[b], buffer).ok());
        ASSERT_TRUE(decode->backend().write_kv_block(layer, reservation->block_ids[b], buffer).ok());
      }
    }
    prefill->release_blocks(id);
    Request d = greedy(id, i);
    d.prefill_mode = PrefillMode::kDecodeFromKv;
    d.first_token_id = first.tokens[0];
    ASSERT_TRUE(decode->submit(d, dc.callback()).ok());
  }
  ASSERT_TRUE(dc.wait_finished(2));
  EXPECT_EQ(dc.get("r1").tokens, (*expected_)[1]);
  EXPECT_EQ(dc.get("r3").tokens, (*expected_)[3]);
  EXPECT_EQ(prefill->stats().num_kv_blocks_used, 0);
}

}  // namespace
}  // namespace tandem::engine
