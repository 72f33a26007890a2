// StopChecker: each stop rule stops exactly where it should; stop strings across token boundaries;
// held-back text is never a stop string's prefix that later turns out to be the stop.
#include "engine/stop_checker.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace tandem::engine {
namespace {

using testing::FakeTextStream;

struct Fed {
  std::string text;
  FinishReason reason = FinishReason::kNone;
  std::string stop_reason;
  int num_tokens = 0;  // generated before finishing
};

// Feeds `tokens` one by one (prompt of 3 tokens) until the checker finishes.
Fed feed(const SamplingParams& p, const std::vector<int32_t>& tokens, const std::map<int32_t, std::string>& spelling,
         int max_model_len = 1000, std::vector<std::string>* deltas = nullptr) {
  StopChecker checker(&p, {99}, max_model_len, std::make_unique<FakeTextStream>(&spelling));
  Fed run;
  for (int32_t t : tokens) {
    ++run.num_tokens;
    std::string delta;
    run.reason = checker.push(t, run.num_tokens, 3 + run.num_tokens, &delta, &run.stop_reason);
    if (deltas) deltas->push_back(delta);
    run.text += delta;
    if (run.reason != FinishReason::kNone) break;
  }
  return run;
}

const std::map<int32_t, std::string> kWords = {{1, "Hel"}, {2, "lo"}, {3, " wor"}, {4, "ld"}, {5, "!"}, {6, "\n"}, {99, "</s>"}};

TEST(StopChecker, MaxTokensStopsWithLength) {
  SamplingParams p;
  p.max_tokens = 3;
  Fed r = feed(p, {1, 2, 3, 4, 5}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.num_tokens, 3);
  EXPECT_EQ(r.text, "Hello wor");
}

TEST(StopChecker, ModelLengthStopsWithLength) {
  SamplingParams p;
  p.max_tokens = 100;
  Fed r = feed(p, {1, 2, 3, 4, 5}, kWords, /*max_model_len=*/5);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.num_tokens, 2);
}

TEST(StopChecker, EosStopsAndItsTextIsLeftOut) {
  SamplingParams p;
  p.max_tokens = 10;
  Fed r = feed(p, {1, 2, 99, 3}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 3);
  EXPECT_EQ(r.text, "Hello");
  EXPECT_EQ(r.stop_reason, "");
}

TEST(StopChecker, IgnoreEosKeepsGoing) {
  SamplingParams p;
  p.max_tokens = 4;
  p.ignore_eos = true;
  Fed r = feed(p, {1, 99, 2, 99, 3}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.num_tokens, 4);
  EXPECT_EQ(r.text, "Hel</s>lo</s>");
}

TEST(StopChecker, StopTokenIdStopsAndNamesTheId) {
  SamplingParams p;
  p.max_tokens = 10;
  p.stop_token_ids = {5};
  Fed r = feed(p, {1, 2, 5, 3}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 3);
  EXPECT_EQ(r.stop_reason, "5");
  EXPECT_EQ(r.text, "Hello");
}

TEST(StopChecker, MinTokensDefersEveryStopButLength) {
  SamplingParams p;
  p.max_tokens = 10;
  p.min_tokens = 3;
  p.stop_token_ids = {5};
  p.stop = {"lo"};
  Fed r = feed(p, {99, 5, 1, 2, 99}, kWords);
  // EOS at 1, the stop id at 2 and nothing at 3 are all before min_tokens... "lo" completes at 4.
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 4);
  EXPECT_EQ(r.stop_reason, "lo");
  EXPECT_EQ(r.text, "</s>!Hel");
  SamplingParams q = p;
  q.stop.clear();
  Fed eos = feed(q, {99, 5, 1, 99}, kWords);
  EXPECT_EQ(eos.num_tokens, 4);
  EXPECT_EQ(eos.reason, FinishReason::kStop);
}

// A stop string completed before min_tokens is text like any other; the same string completed after it
// stops. (The test above completes its stop string only once min_tokens is reached.)
TEST(StopChecker, StopStringCompletedBeforeMinTokensIsIgnored) {
  SamplingParams p;
  p.max_tokens = 10;
  p.min_tokens = 3;
  p.stop = {"lo"};
  Fed r = feed(p, {1, 2, 1, 2, 3}, kWords);
  // "lo" completes at token 2 (before min_tokens) and again at token 4.
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 4);
  EXPECT_EQ(r.stop_reason, "lo");
  EXPECT_EQ(r.text, "HelloHel");
}

TEST(StopChecker, StopStringAcrossTokenBoundariesTrimsTheText) {
  SamplingParams p;
  p.max_tokens = 10;
  p.stop = {"lo wo"};
  std::vector<std::string> deltas;
  Fed r = feed(p, {1, 2, 3, 4}, kWords, 1000, &deltas);
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 3);  // "Hel" "lo" " wor": the match ends inside token 3
  EXPECT_EQ(r.stop_reason, "lo wo");
  EXPECT_EQ(r.text, "Hel");
  // A tail that could start the stop string ("l", then "lo") is held back rather than streamed.
  ASSERT_EQ(deltas.size(), 3u);
  EXPECT_EQ(deltas[0], "He");
  EXPECT_EQ(deltas[1], "l");
  EXPECT_EQ(deltas[2], "");
}

TEST(StopChecker, HeldBackTextIsReleasedWhenItIsNotAStop) {
  SamplingParams p;
  p.max_tokens = 10;
  p.stop = {"lo!"};
  std::vector<std::string> deltas;
  Fed r = feed(p, {1, 2, 3, 4}, kWords, 1000, &deltas);
  EXPECT_EQ(r.reason, FinishReason::kNone);
  EXPECT_EQ(deltas[0], "He");      // "l" held: it may start "lo!"
  EXPECT_EQ(deltas[1], "l");       // "lo" held
  EXPECT_EQ(deltas[2], "lo wor");  // " wor" settles it
  EXPECT_EQ(r.text, "Hello world");
}

TEST(StopChecker, EarliestStopStringWins) {
  SamplingParams p;
  p.max_tokens = 10;
  p.stop = {"world", "o w"};
  Fed r = feed(p, {1, 2, 3, 4}, kWords);
  EXPECT_EQ(r.stop_reason, "o w");
  EXPECT_EQ(r.text, "Hell");
}

TEST(StopChecker, LengthFlushesHeldText) {
  SamplingParams p;
  p.max_tokens = 2;
  p.stop = {"lo!"};
  Fed r = feed(p, {1, 2}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.text, "Hello");
}

TEST(StopChecker, StopStringInsideOneToken) {
  SamplingParams p;
  p.max_tokens = 10;
  p.stop = {"\n"};
  Fed r = feed(p, {1, 6, 2}, kWords);
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.num_tokens, 2);
  EXPECT_EQ(r.text, "Hel");
}

}  // namespace
}  // namespace tandem::engine
