// The engine's hooks for issue 22 over a fake backend: a resumed request (a migrated stream: its
// earlier output at the end of the prompt, Request::num_resumed_tokens) continues exactly as the
// undisturbed request would, for seeded sampling with penalties and for the streamed text (stop
// strings across the seam included), and one choice of several resumed alone continues that
// choice's draws; and its KV events, replayed, equal the prefix cache's contents.
#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <thread>

#include "engine/engine.h"
#include "test_util.h"

namespace tandem::engine {
namespace {

using testing::Collector;
using testing::FakeBackend;
using testing::FakeTextStreamFactory;
using testing::make_request;

std::unique_ptr<Engine> make_engine(int num_blocks, std::shared_ptr<TextStreamFactory> text = nullptr) {
  return create_engine(std::make_unique<FakeBackend>(num_blocks, 4, FakeBackend::Mode::kHash), EngineOptions{},
                       std::move(text));
}

Request sampled(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  Request r = make_request(id, std::move(prompt), max_tokens);
  r.sampling.temperature = 2.0f;
  r.sampling.seed = 4242;
  r.sampling.presence_penalty = 0.7f;
  r.sampling.frequency_penalty = 0.3f;
  return r;
}

TEST(EngineResume, ASeededStreamResumedElsewhereContinuesItsDraws) {
  auto engine = make_engine(64);
  const std::vector<int32_t> prompt = {5, 9, 13, 2, 7, 11};
  Collector collector;
  ASSERT_TRUE(engine->submit(sampled("whole", prompt, 16), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  const std::vector<int32_t> whole = collector.get("whole").tokens;
  ASSERT_EQ(whole.size(), 16u);

  auto other = make_engine(64);  // "another worker"
  for (int k : {1, 6, 15}) {
    Request resumed = sampled("resumed-" + std::to_string(k), prompt, 16 - k);
    resumed.prompt_token_ids.insert(resumed.prompt_token_ids.end(), whole.begin(), whole.begin() + k);
    resumed.num_resumed_tokens = k;
    Collector c;
    ASSERT_TRUE(other->submit(resumed, c.callback()).ok());
    ASSERT_TRUE(c.wait_finished(1));
    EXPECT_EQ(c.get(resumed.request_id).tokens, std::vector<int32_t>(whole.begin() + k, whole.end())) << "k = " << k;
  }
  // Without the mark the same tokens are a prompt: the draws start over and differ.
  Request plain = sampled("plain", prompt, 10);
  plain.prompt_token_ids.insert(plain.prompt_token_ids.end(), whole.begin(), whole.begin() + 6);
  Collector c;
  ASSERT_TRUE(other->submit(plain, c.callback()).ok());
  ASSERT_TRUE(c.wait_finished(1));
  EXPECT_NE(c.get("plain").tokens, std::vector<int32_t>(whole.begin() + 6, whole.end()));

  Request bad = sampled("bad", prompt, 4);
  bad.num_resumed_tokens = static_cast<int>(prompt.size());
  EXPECT_EQ(other->submit(bad, c.callback()).code(), StatusCode::kInvalidArgument);
}

// A migrated choice of several goes on alone (n = 1): with its choice_index its draws are that
// choice's, so each choice of a seeded n = 3 request continues exactly; without it, choice 0's.
TEST(EngineResume, OneChoiceOfSeveralResumedAloneContinuesItsOwnDraws) {
  auto engine = make_engine(64);
  const std::vector<int32_t> prompt = {5, 9, 13, 2, 7, 11};
  Request whole = sampled("whole", prompt, 12);
  whole.sampling.n = 3;
  Collector collector;
  ASSERT_TRUE(engine->submit(whole, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(3));
  std::vector<std::vector<int32_t>> choices;
  for (int i = 0; i < 3; ++i) choices.push_back(collector.get("whole", i).tokens);
  ASSERT_EQ(choices[1].size(), 12u);
  ASSERT_NE(choices[1], choices[2]);  // the reference tells the choices apart

  auto other = make_engine(64);
  constexpr int k = 5;
  for (int i = 0; i < 3; ++i) {
    Request resumed = sampled("choice-" + std::to_string(i), prompt, 12 - k);
    resumed.prompt_token_ids.insert(resumed.prompt_token_ids.end(), choices[i].begin(), choices[i].begin() + k);
    resumed.num_resumed_tokens = k;
    resumed.choice_index = i;
    Collector c;
    ASSERT_TRUE(other->submit(resumed, c.callback()).ok());
    ASSERT_TRUE(c.wait_finished(1));
    EXPECT_EQ(c.get(resumed.request_id).last.index, 0);  // the one choice it carries
    EXPECT_EQ(c.get(resumed.request_id).tokens, std::vector<int32_t>(choices[i].begin() + k, choices[i].end()))
        << "choice " << i;
  }
  // Choice 2's tokens drawn as choice 0's: not choice 2's continuation.
  Request unkeyed = sampled("unkeyed", prompt, 12 - k);
  unkeyed.prompt_token_ids.insert(unkeyed.prompt_token_ids.end(), choices[2].begin(), choices[2].begin() + k);
  unkeyed.num_resumed_tokens = k;
  Collector c;
  ASSERT_TRUE(other->submit(unkeyed, c.callback()).ok());
  ASSERT_TRUE(c.wait_finished(1));
  EXPECT_NE(c.get("unkeyed").tokens, std::vector<int32_t>(choices[2].begin() + k, choices[2].end()));

  Request several = sampled("several", prompt, 4);
  several.sampling.n = 2;
  several.choice_index = 1;
  EXPECT_EQ(other->submit(several, c.callback()).code(), StatusCode::kInvalidArgument);
}

TEST(EngineResume, TextContinuesFromTheBytesTheClientHasAndStopStringsSpanTheSeam) {
  auto text = std::make_shared<FakeTextStreamFactory>();
  auto engine = make_engine(64, text);
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  Collector collector;
  ASSERT_TRUE(engine->submit(make_request("whole", prompt, 8), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  const auto whole = collector.get("whole");
  ASSERT_EQ(whole.tokens.size(), 8u);

  // The client had the text of 3 tokens but 2 bytes (a held-back tail): the rest comes first.
  auto other = make_engine(64, text);
  std::string first3;
  for (int i = 0; i < 3; ++i) first3 += "<" + std::to_string(whole.tokens[i]) + ">";
  Request resumed = make_request("r", prompt, 5);
  resumed.prompt_token_ids.insert(resumed.prompt_token_ids.end(), whole.tokens.begin(), whole.tokens.begin() + 3);
  resumed.num_resumed_tokens = 3;
  resumed.resumed_text_bytes = static_cast<int64_t>(first3.size()) - 2;
  Collector c;
  ASSERT_TRUE(other->submit(resumed, c.callback()).ok());
  ASSERT_TRUE(c.wait_finished(1));
  EXPECT_EQ(first3.substr(0, first3.size() - 2) + c.get("r").text, whole.text);

  // A stop string that starts in the resumed text and ends in the new one stops the stream there.
  const std::string seam = "<" + std::to_string(whole.tokens[2]) + "><" + std::to_string(whole.tokens[3]) + ">";
  Request stopping = resumed;
  stopping.request_id = "s";
  stopping.resumed_text_bytes = static_cast<int64_t>(first3.size());
  stopping.sampling.stop = {seam.substr(1, seam.size() - 2)};
  Collector s;
  ASSERT_TRUE(other->submit(stopping, s.callback()).ok());
  ASSERT_TRUE(s.wait_finished(1));
  EXPECT_EQ(s.get("s").tokens.size(), 1u);
  EXPECT_EQ(s.get("s").last.finish_reason, FinishReason::kStop);
}

TEST(EngineKvEvents, ReplayedEventsEqualThePrefixCache) {
  auto engine = make_engine(12);  // small: later prompts evict earlier ones
  EXPECT_NE(engine->kv_hash_salt(), 0u);
  std::mutex mu;
  std::set<uint64_t> replayed;
  int batches = 0;
  engine->set_on_kv_events([&](KvCacheEvents e) {
    std::lock_guard<std::mutex> lock(mu);
    ++batches;
    for (uint64_t h : e.removed) replayed.erase(h);
    for (uint64_t h : e.stored) replayed.insert(h);
  });
  Collector collector;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> prompt;
    for (int t = 0; t < 13; ++t) prompt.push_back(static_cast<int32_t>(((i % 3) * 17 + t) % 60));  // fake vocab: 64
    ASSERT_TRUE(engine->submit(make_request(std::to_string(i), prompt, 3), collector.callback()).ok());
    ASSERT_TRUE(collector.wait_finished(i + 1));
  }
  // The last step's events are delivered after its outputs: wait for them to settle.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto cached = engine->kv_cached_hashes();
  std::set<uint64_t> expected(cached.begin(), cached.end());
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (replayed == expected) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    cached = engine->kv_cached_hashes();
    expected = std::set<uint64_t>(cached.begin(), cached.end());
  }
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(replayed, expected);
  EXPECT_FALSE(expected.empty());
  EXPECT_GT(batches, 1);
}

}  // namespace
}  // namespace tandem::engine
