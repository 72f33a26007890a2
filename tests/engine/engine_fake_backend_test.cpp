// The engine over a fake backend (no model math; its answer is read back from the KV blocks): outputs
// against a reference, preemption and prefix hits, seeds, n > 1, stop rules end to end, abort, backend
// failure, admission errors, the disaggregation hooks, shutdown.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <thread>

#include "engine/engine.h"
#include "engine/sampler.h"
#include "test_util.h"

namespace tandem::engine {
namespace {

using testing::Collector;
using testing::FakeBackend;
using testing::FakeTextStreamFactory;
using testing::make_request;

std::vector<int32_t> reference(std::vector<int32_t> tokens, int max_tokens, FakeBackend::Mode mode = FakeBackend::Mode::kHash) {
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    out.push_back(FakeBackend::next_token(tokens, mode));
    tokens.push_back(out.back());
  }
  return out;
}

struct FakeEngine {
  FakeBackend* backend;
  std::unique_ptr<Engine> engine;
};

FakeEngine make_engine(int num_blocks, EngineOptions options = {}, FakeBackend::Mode mode = FakeBackend::Mode::kHash,
                       std::shared_ptr<TextStreamFactory> text = nullptr) {
  auto backend = std::make_unique<FakeBackend>(num_blocks, 4, mode);
  FakeBackend* raw = backend.get();
  return {raw, create_engine(std::move(backend), options, std::move(text))};
}

std::vector<int32_t> random_prompt(std::mt19937& rng, int len, const std::vector<int32_t>& prefix) {
  std::vector<int32_t> p;
  for (int i = 0; i < len; ++i) p.push_back(i < static_cast<int>(prefix.size()) ? prefix[i] : static_cast<int32_t>(rng() % 60));
  return p;
}

TEST(EngineFake, ManyRequestsWithPreemptionAndPrefixHitsMatchTheReference) {
  EngineOptions options;
  options.max_batch_tokens = 32;
  options.max_seqs = 8;
  FakeEngine fe = make_engine(24, options);  // 96 token slots: far less than the traffic needs
  std::mt19937 rng(5);
  const std::vector<int32_t> prefix = random_prompt(rng, 12, {});
  Collector collector;
  std::vector<std::pair<std::vector<int32_t>, int>> requests;
  fe.backend->hold_ = true;  // the first step waits until every request is queued: contention is certain
  for (int i = 0; i < 40; ++i) {
    requests.emplace_back(random_prompt(rng, 1 + rng() % 30, rng() % 2 ? prefix : std::vector<int32_t>{}), 1 + rng() % 20);
    ASSERT_TRUE(fe.engine->submit(make_request(std::to_string(i), requests.back().first, requests.back().second), collector.callback()).ok());
  }
  fe.backend->hold_ = false;
  ASSERT_TRUE(collector.wait_finished(40));
  for (int i = 0; i < 40; ++i) {
    auto c = collector.get(std::to_string(i));
    EXPECT_EQ(c.tokens, reference(requests[i].first, requests[i].second)) << "request " << i;
    EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(c.num_finished, 1);
  }
  const EngineStats stats = fe.engine->stats();
  EXPECT_GT(stats.num_preemptions, 0);
  EXPECT_GT(stats.prefix_cache_hits, 0);
  EXPECT_EQ(stats.num_kv_blocks_used, 0);
  EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
  EXPECT_LE(fe.backend->max_tokens_seen_, 32);
  EXPECT_LE(fe.backend->max_seqs_seen_, 8);
}

TEST(EngineFake, SeededSamplingIsReproducibleWhateverElseIsInTheBatch) {
  auto run = [](int num_others) {
    FakeEngine fe = make_engine(200);
    Collector collector;
    Request r = make_request("x", {1, 2, 3}, 12);
    r.sampling.temperature = 3.0f;  // flat enough that draws differ from the argmax often
    r.sampling.seed = 1234;
    for (int i = 0; i < num_others; ++i) {
      Request o = make_request("o" + std::to_string(i), {static_cast<int32_t>(i), 5}, 12);
      o.sampling.temperature = 1.0f;
      EXPECT_TRUE(fe.engine->submit(o, collector.callback()).ok());
    }
    EXPECT_TRUE(fe.engine->submit(r, collector.callback()).ok());
    EXPECT_TRUE(collector.wait_finished(num_others + 1));
    return collector.get("x").tokens;
  };
  const std::vector<int32_t> alone = run(0);
  EXPECT_EQ(alone.size(), 12u);
  EXPECT_EQ(run(7), alone);
  EXPECT_NE(alone, reference({1, 2, 3}, 12)) << "temperature 3 should move away from greedy somewhere";
}

TEST(EngineFake, NChoicesShareThePromptAndEachFinish) {
  FakeEngine fe = make_engine(64);
  Collector collector;
  const std::vector<int32_t> prompt = {9, 8, 7, 6, 5, 4, 3};  // one full block and a partial one
  Request greedy = make_request("g", prompt, 6);
  greedy.sampling.n = 3;
  ASSERT_TRUE(fe.engine->submit(greedy, collector.callback()).ok());
  Request sampled = make_request("s", prompt, 6);
  sampled.sampling.n = 4;
  sampled.sampling.temperature = 3.0f;
  sampled.sampling.seed = 77;
  ASSERT_TRUE(fe.engine->submit(sampled, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(7));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(collector.get("g", i).tokens, reference(prompt, 6)) << "choice " << i;
  // Sampled choices: each continues correctly from its own first token (the fake model is
  // deterministic given the context, but temperature 3 draws away from it), and they differ.
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 4; ++i) {
    auto c = collector.get("s", i);
    EXPECT_EQ(c.tokens.size(), 6u);
    EXPECT_EQ(c.num_finished, 1);
    distinct.insert(c.tokens);
  }
  EXPECT_GT(distinct.size(), 1u);
  EXPECT_EQ(fe.engine->stats().num_kv_blocks_used, 0);
}

TEST(EngineFake, StopRulesEndToEnd) {
  auto text = std::make_shared<FakeTextStreamFactory>();
  FakeEngine fe = make_engine(64, {}, FakeBackend::Mode::kCount, text);
  Collector collector;
  Request stop_id = make_request("stop_id", {10}, 20);
  stop_id.sampling.stop_token_ids = {14};
  Request stop_str = make_request("stop_str", {10}, 20);
  stop_str.sampling.stop = {"3><14"};
  Request length = make_request("length", {10}, 5);
  ASSERT_TRUE(fe.engine->submit(stop_id, collector.callback()).ok());
  ASSERT_TRUE(fe.engine->submit(stop_str, collector.callback()).ok());
  ASSERT_TRUE(fe.engine->submit(length, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(3));
  auto a = collector.get("stop_id");
  EXPECT_EQ(a.tokens, (std::vector<int32_t>{11, 12, 13, 14}));
  EXPECT_EQ(a.last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(a.last.stop_reason, "14");
  EXPECT_EQ(a.text, "<11><12><13>");
  auto b = collector.get("stop_str");
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{11, 12, 13, 14}));
  EXPECT_EQ(b.last.stop_reason, "3><14");
  EXPECT_EQ(b.text, "<11><12><1");
  auto c = collector.get("length");
  EXPECT_EQ(c.tokens, (std::vector<int32_t>{11, 12, 13, 14, 15}));
  EXPECT_EQ(c.last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.text, "<11><12><13><14><15>");
}

TEST(EngineFake, MinTokensAndIgnoreEosAgainstAModelThatWantsToStop) {
  FakeEngine fe = make_engine(64, {}, FakeBackend::Mode::kCount);
  fe.backend->eos_logit_ = 9.0f;  // EOS beats every other token
  Collector collector;
  const int32_t eos = FakeBackend::kVocab - 1;
  Request plain = make_request("plain", {10}, 8);
  Request min_tokens = make_request("min", {10}, 8);
  min_tokens.sampling.min_tokens = 3;
  Request ignore = make_request("ignore", {10}, 4);
  ignore.sampling.ignore_eos = true;
  ASSERT_TRUE(fe.engine->submit(plain, collector.callback()).ok());
  ASSERT_TRUE(fe.engine->submit(min_tokens, collector.callback()).ok());
  ASSERT_TRUE(fe.engine->submit(ignore, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(3));
  EXPECT_EQ(collector.get("plain").tokens, std::vector<int32_t>{eos});
  EXPECT_EQ(collector.get("plain").last.finish_reason, FinishReason::kStop);
  // EOS is masked while fewer than min_tokens are out (vLLM): three counter tokens, then EOS.
  EXPECT_EQ(collector.get("min").tokens, (std::vector<int32_t>{11, 12, 13, eos}));
  EXPECT_EQ(collector.get("ignore").tokens, (std::vector<int32_t>{eos, eos, eos, eos}));
  EXPECT_EQ(collector.get("ignore").last.finish_reason, FinishReason::kLength);
}

TEST(EngineFake, LogprobsStreamWithEachToken) {
  FakeEngine fe = make_engine(64);
  Collector collector;
  Request r = make_request("lp", {1, 2}, 3);
  r.sampling.logprobs = 2;
  ASSERT_TRUE(fe.engine->submit(r, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  auto c = collector.get("lp");
  ASSERT_EQ(c.logprobs.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(c.logprobs[i].token_id, c.tokens[i]);
    ASSERT_EQ(c.logprobs[i].top.size(), 2u);
    EXPECT_EQ(c.logprobs[i].top[0].token_id, c.tokens[i]);
    // logits 8 at the answer, 0 on 62 others, -100 on EOS
    EXPECT_NEAR(c.logprobs[i].logprob, 8.0 - std::log(std::exp(8.0) + 62.0), 1e-4);
  }
}

TEST(EngineFake, AbortEndsTheRequestAndFreesItsBlocks) {
  FakeEngine fe = make_engine(256);
  Collector collector;
  Request r = make_request("long", {1, 2, 3}, 1000);
  std::atomic<int> seen{0};
  auto cb = collector.callback();
  FakeBackend* backend = fe.backend;
  ASSERT_TRUE(fe.engine->submit(r, [&](RequestOutput out) {
                  if (++seen == 3) backend->hold_ = true;  // the next step waits for the abort
                  cb(std::move(out));
                }).ok());
  while (seen < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  fe.engine->abort("long");
  fe.engine->abort("unknown");  // no-op
  backend->hold_ = false;
  ASSERT_TRUE(collector.wait_finished(1));
  auto c = collector.get("long");
  EXPECT_EQ(c.last.finish_reason, FinishReason::kAbort);
  EXPECT_EQ(c.num_finished, 1);
  EXPECT_LE(c.tokens.size(), 4u);
  EXPECT_EQ(fe.engine->stats().num_kv_blocks_used, 0);
}

TEST(EngineFake, BackendFailureFailsTheStepsRequestsAndTheEngineGoesOn) {
  FakeEngine fe = make_engine(64);
  fe.backend->fail_at_call_ = 2;
  Collector collector;
  ASSERT_TRUE(fe.engine->submit(make_request("a", {1, 2}, 5), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  auto a = collector.get("a");
  EXPECT_EQ(a.last.finish_reason, FinishReason::kError);
  EXPECT_EQ(a.last.error.code(), StatusCode::kInternal);
  EXPECT_EQ(a.tokens.size(), 1u);  // the first step succeeded
  ASSERT_TRUE(fe.engine->submit(make_request("b", {1, 2}, 5), collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(2));
  EXPECT_EQ(collector.get("b").tokens, reference({1, 2}, 5));
  EXPECT_EQ(fe.engine->stats().num_kv_blocks_used, 0);
}

TEST(EngineFake, DeviceFailureFailsEveryHeldRequestAndRefusesNewWork) {
  EngineOptions options;
  options.max_seqs = 2;  // two run, the others wait: the failure must reach the waiting ones too
  FakeEngine fe = make_engine(64, options);
  fe.backend->fail_at_call_ = 3;
  fe.backend->sticky_failure_ = true;
  std::atomic<int> lost_calls{0};
  std::string lost_message;
  fe.engine->set_on_device_lost([&](const Status& failure) {
    lost_message = failure.message();
    ++lost_calls;
  });
  ASSERT_TRUE(fe.engine->reserve_kv("reserved", {1, 2, 3, 4, 5}).ok());
  Collector collector;
  fe.backend->hold_ = true;
  for (const char* id : {"a", "b", "c", "d"}) {
    ASSERT_TRUE(fe.engine->submit(make_request(id, {1, 2, 3}, 50), collector.callback()).ok());
  }
  fe.backend->hold_ = false;
  ASSERT_TRUE(collector.wait_finished(4));
  for (const char* id : {"a", "b", "c", "d"}) {
    auto c = collector.get(id);
    EXPECT_EQ(c.last.finish_reason, FinishReason::kError) << id;
    EXPECT_EQ(c.last.error.code(), StatusCode::kInternal) << id;
    EXPECT_EQ(c.num_finished, 1) << id;
  }
  EXPECT_NE(collector.get("c").last.error.message().find("fake failed"), std::string::npos) << collector.get("c").last.error.message();
  for (int i = 0; i < 2000 && lost_calls == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(lost_calls.load(), 1);
  EXPECT_EQ(lost_message, "injected sticky device failure");
  EXPECT_EQ(fe.engine->stats().num_kv_blocks_used, 0) << "the reservation and every request's blocks are released";
  EXPECT_EQ(fe.engine->submit(make_request("e", {1, 2}, 5), collector.callback()).code(), StatusCode::kUnavailable);
  EXPECT_EQ(fe.engine->reserve_kv("f", {1, 2}).status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(fe.backend->num_calls_.load(), 3) << "no step runs on a failed device";
  EXPECT_EQ(lost_calls.load(), 1);
}

TEST(EngineFake, SampledRowsAreDrawnOnTheDeviceWithTheHostSamplersNumbersAndEdits) {
  auto backend = std::make_unique<FakeBackend>(64, 4);
  backend->device_sampling_ = true;
  FakeBackend* raw = backend.get();
  auto engine = create_engine(std::move(backend), {});
  Collector collector;
  Request sampled = make_request("sampled", {1, 2, 3}, 4);
  sampled.sampling.temperature = 0.8f;
  sampled.sampling.top_k = 20;
  sampled.sampling.top_p = 0.9f;
  sampled.sampling.min_p = 0.05f;
  sampled.sampling.seed = 7;
  ASSERT_TRUE(engine->submit(sampled, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(1));
  EXPECT_EQ(collector.get("sampled").tokens, reference({1, 2, 3}, 4));
  ASSERT_EQ(raw->sampled_rows_.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const backend::RowSampling& row = raw->sampled_rows_[i];
    EXPECT_EQ(row.uniform, Sampler::uniform_for(7, 0, i)) << "draw " << i;
    EXPECT_EQ(row.temperature, 0.8f);
    EXPECT_EQ(row.top_k, 20);
    EXPECT_EQ(row.top_p, 0.9f);
    EXPECT_EQ(row.min_p, 0.05f);
    EXPECT_EQ(row.num_logprobs, -1);
    EXPECT_TRUE(raw->sampled_edits_[i].empty());
  }

  // A presence penalty becomes one edit per distinct token generated so far.
  Request penalised = make_request("penalised", {4, 5}, 3);
  penalised.sampling.temperature = 0.8f;
  penalised.sampling.presence_penalty = 0.5f;
  ASSERT_TRUE(engine->submit(penalised, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(2));
  const std::vector<int32_t> penalised_tokens = collector.get("penalised").tokens;
  ASSERT_EQ(raw->sampled_rows_.size(), 7u);
  EXPECT_TRUE(raw->sampled_edits_[4].empty());
  ASSERT_EQ(raw->sampled_edits_[5].size(), 1u);
  EXPECT_EQ(raw->sampled_edits_[5][0].token, penalised_tokens[0]);
  EXPECT_EQ(raw->sampled_edits_[5][0].subtract, 0.5f);
  EXPECT_EQ(raw->sampled_edits_[5][0].masked, 0);

  // Logprobs come back with the token.
  Request with_logprobs = make_request("logprobs", {4, 6}, 2);
  with_logprobs.sampling.temperature = 0.8f;
  with_logprobs.sampling.logprobs = 2;
  ASSERT_TRUE(engine->submit(with_logprobs, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(3));
  ASSERT_EQ(raw->sampled_rows_.size(), 9u);
  EXPECT_EQ(raw->sampled_rows_[7].num_logprobs, 2);
  auto lp = collector.get("logprobs");
  ASSERT_EQ(lp.logprobs.size(), 2u);
  EXPECT_EQ(lp.logprobs[0].token_id, lp.tokens[0]);
  EXPECT_EQ(lp.logprobs[0].logprob, -1.25f);
  ASSERT_EQ(lp.logprobs[0].top.size(), 1u);
  EXPECT_EQ(lp.logprobs[0].top[0].token_id, 0);

  // The first token of n > 1 choices is n draws from one row (host sampler); plain greedy is an argmax.
  Request two = make_request("two", {4, 7}, 1);
  two.sampling.temperature = 0.8f;
  two.sampling.n = 2;
  Request greedy = make_request("greedy", {4, 8}, 3);
  ASSERT_TRUE(engine->submit(two, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(5));
  ASSERT_TRUE(engine->submit(greedy, collector.callback()).ok());
  ASSERT_TRUE(collector.wait_finished(6));
  EXPECT_EQ(raw->sampled_rows_.size(), 9u);
}

TEST(EngineFake, SubmitRejectsBadRequests) {
  FakeEngine fe = make_engine(10);  // 40 token slots: max_model_len 40
  EXPECT_EQ(fe.engine->stats().max_model_len, 40);
  Collector collector;
  auto cb = collector.callback();
  EXPECT_EQ(fe.engine->submit(make_request("big", std::vector<int32_t>(40, 1), 1), cb).code(), StatusCode::kTooLarge);
  EXPECT_TRUE(fe.engine->submit(make_request("fits", std::vector<int32_t>(39, 1), 5), cb).ok());
  EXPECT_EQ(fe.engine->submit(make_request("", {1}, 1), cb).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fe.engine->submit(make_request("e", {}, 1), cb).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(fe.engine->submit(make_request("v", {64}, 1), cb).code(), StatusCode::kInvalidArgument);
  Request bad = make_request("p", {1}, 1);
  bad.sampling.top_p = 0;
  EXPECT_EQ(fe.engine->submit(bad, cb).code(), StatusCode::kInvalidArgument);
  bad = make_request("p", {1}, 0);
  EXPECT_EQ(fe.engine->submit(bad, cb).code(), StatusCode::kInvalidArgument);
  bad = make_request("p", {1}, 1);
  bad.sampling.logprobs = 21;
  EXPECT_EQ(fe.engine->submit(bad, cb).code(), StatusCode::kInvalidArgument);
  bad = make_request("p", {1}, 1);
  bad.sampling.stop = {"x"};  // no detokenizer
  EXPECT_EQ(fe.engine->submit(bad, cb).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(collector.wait_finished(1));
  EXPECT_EQ(collector.get("fits").last.finish_reason, FinishReason::kLength);
  EXPECT_EQ(collector.get("fits").tokens.size(), 1u);  // the model length (40) ends it
}

TEST(EngineFake, DuplicateLiveRequestIdIsRejected) {
  FakeEngine fe = make_engine(256);
  fe.backend->hold_ = true;  // "same" stays live until released
  Collector collector;
  ASSERT_TRUE(fe.engine->submit(make_request("same", {1}, 200), collector.callback()).ok());
  EXPECT_EQ(fe.engine->submit(make_request("same", {1}, 2), collector.callback()).code(), StatusCode::kInvalidArgument);
  fe.engine->abort("same");
  fe.backend->hold_ = false;
  ASSERT_TRUE(collector.wait_finished(1));
  EXPECT_EQ(collector.get("same").last.finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(fe.engine->submit(make_request("same", {1}, 2), collector.callback()).ok()) << "the id is free again";
  ASSERT_TRUE(collector.wait_finished(2));
}

TEST(EngineFake, PrefillOnlyThenDecodeFromKvOnAnotherEngineMatchesLocal) {
  FakeEngine prefill = make_engine(64), decode = make_engine(64);
  Collector pc, dc;
  const std::vector<int32_t> prompt = {5, 4, 3, 2, 1, 9, 9, 9, 7, 7};
  // Warm decode's prefix cache with the first block so the reservation reuses it.
  ASSERT_TRUE(decode.engine->submit(make_request("warm", {5, 4, 3, 2, 1}, 1), dc.callback()).ok());
  ASSERT_TRUE(dc.wait_finished(1));
  EXPECT_EQ(decode.engine->num_cached_prefix_tokens(prompt), 4);
  EXPECT_EQ(decode.engine->num_cached_prefix_tokens({9, 9, 9, 9, 9}), 0);
  auto reservation = decode.engine->reserve_kv("r", prompt);
  ASSERT_TRUE(reservation.ok()) << reservation.status().to_string();
  EXPECT_EQ(reservation->block_ids.size(), 3u);
  EXPECT_EQ(reservation->num_cached_tokens, 4);
  Request p = make_request("r", prompt, 8);
  p.prefill_mode = PrefillMode::kPrefillOnly;
  ASSERT_TRUE(prefill.engine->submit(p, pc.callback()).ok());
  ASSERT_TRUE(pc.wait_finished(1));
  auto first = pc.get("r");
  ASSERT_EQ(first.tokens.size(), 1u);
  EXPECT_EQ(first.last.finish_reason, FinishReason::kNone);
  EXPECT_TRUE(first.last.finished);
  ASSERT_EQ(first.last.kv_block_ids.size(), 3u);
  EXPECT_GT(prefill.engine->stats().num_kv_blocks_used, 0);
  // The transfer: only the blocks past the decode side's cached prefix.
  const auto& spec = prefill.backend->kv_cache_spec();
  std::vector<std::byte> buffer(spec.block_bytes());
  for (size_t i = reservation->num_cached_tokens / spec.block_size; i < reservation->block_ids.size(); ++i) {
    ASSERT_TRUE(prefill.backend->read_kv_block(0, first.last.kv_block_ids[i], buffer).ok());
    ASSERT_TRUE(decode.backend->write_kv_block(0, reservation->block_ids[i], buffer).ok());
  }
  prefill.engine->release_blocks("r");
  EXPECT_EQ(prefill.engine->stats().num_kv_blocks_used, 0);
  Request d = make_request("r", prompt, 8);
  d.prefill_mode = PrefillMode::kDecodeFromKv;
  d.first_token_id = first.tokens[0];
  ASSERT_TRUE(decode.engine->submit(d, dc.callback()).ok());
  ASSERT_TRUE(dc.wait_finished(2));
  EXPECT_EQ(dc.get("r").tokens, reference(prompt, 8));
  EXPECT_EQ(decode.engine->stats().num_kv_blocks_used, 0);
  // The decode side published the transferred prompt blocks: a local request now hits them.
  EXPECT_EQ(decode.engine->submit(make_request("again", prompt, 1), dc.callback()).code(), StatusCode::kOk);
  ASSERT_TRUE(dc.wait_finished(3));
  EXPECT_EQ(dc.get("again").last.num_cached_prompt_tokens, 8);
}

TEST(EngineFake, ReservationsAreExhaustibleAndReleasable) {
  FakeEngine fe = make_engine(4);
  auto a = fe.engine->reserve_kv("a", std::vector<int32_t>(12, 1));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(fe.engine->reserve_kv("b", std::vector<int32_t>(8, 2)).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(fe.engine->reserve_kv("a", {1}).status().code(), StatusCode::kInvalidArgument);
  fe.engine->release_blocks("a");
  EXPECT_TRUE(fe.engine->reserve_kv("b", std::vector<int32_t>(8, 2)).ok());
  fe.engine->abort("b");  // abort releases a reservation too
  EXPECT_EQ(fe.engine->stats().num_kv_blocks_used, 0);
  Request d = make_request("none", {1, 2}, 2);
  d.prefill_mode = PrefillMode::kDecodeFromKv;
  d.first_token_id = 3;
  EXPECT_EQ(fe.engine->submit(d, [](RequestOutput) {}).code(), StatusCode::kNotFound);
}

TEST(EngineFake, DestroyingTheEngineAbortsLiveRequests) {
  Collector collector;
  {
    FakeEngine fe = make_engine(1024);
    ASSERT_TRUE(fe.engine->submit(make_request("a", {1}, 4000), collector.callback()).ok());
    Request n = make_request("n", {1}, 4000);
    n.sampling.n = 2;
    ASSERT_TRUE(fe.engine->submit(n, collector.callback()).ok());
  }
  EXPECT_EQ(collector.num_finished(), 3);
  EXPECT_EQ(collector.get("a").last.finish_reason, FinishReason::kAbort);
}

}  // namespace
}  // namespace tandem::engine

namespace tandem::engine {
namespace {

using testing::Collector;
using testing::FakeBackend;
using testing::make_request;

TEST(EngineFake, LocalSubmitAfterAReservationFreesItAndPrefillsHere) {
  auto backend = std::make_unique<FakeBackend>(8, 4);
  auto engine = create_engine(std::move(backend), {});
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  ASSERT_TRUE(engine->reserve_kv("r", prompt).ok());  // 5 of 8 blocks
  Collector collector;
  ASSERT_TRUE(engine->submit(make_request("r", prompt, 8), collector.callback()).ok());  // needs 7 blocks
  ASSERT_TRUE(collector.wait_finished(1));
  std::vector<int32_t> tokens = prompt, expected;
  for (int i = 0; i < 8; ++i) {
    expected.push_back(FakeBackend::next_token(tokens, FakeBackend::Mode::kHash));
    tokens.push_back(expected.back());
  }
  EXPECT_EQ(collector.get("r").tokens, expected);
  EXPECT_EQ(engine->stats().num_kv_blocks_used, 0);
}

// Random traffic from two client threads with aborts and n > 1 against a pool small enough to
// preempt: every choice ends exactly once, every choice that was not aborted matches the reference,
// and no block stays referenced.
TEST(EngineFake, RandomTrafficWithAbortsEndsEveryChoiceOnceAndLeaksNothing) {
  EngineOptions options;
  options.max_batch_tokens = 48;
  options.max_seqs = 12;
  auto backend = std::make_unique<FakeBackend>(40, 4);
  FakeBackend* fake = backend.get();
  fake->hold_ = true;  // a backlog builds up first: preemption and aborts of queued requests are certain
  auto engine = create_engine(std::move(backend), options);
  Collector collector;
  std::atomic<int> num_submitted{0};
  std::mutex mu;
  std::map<std::string, std::pair<std::vector<int32_t>, int>> submitted;  // id -> prompt, max_tokens
  std::atomic<int> num_choices{0};
  auto client = [&](int which) {
    std::mt19937 rng(100 + which);
    for (int i = 0; i < 150; ++i) {
      const std::string id = std::to_string(which) + "-" + std::to_string(i);
      std::vector<int32_t> prompt(1 + rng() % 40);
      for (auto& t : prompt) t = static_cast<int32_t>(rng() % 8);  // few distinct tokens: prefix hits
      Request r = make_request(id, prompt, 1 + rng() % 24);
      r.sampling.n = rng() % 5 == 0 ? 2 : 1;
      {
        std::lock_guard<std::mutex> lock(mu);
        submitted[id] = {prompt, r.sampling.max_tokens};
      }
      ASSERT_TRUE(engine->submit(r, collector.callback()).ok());
      num_choices += r.sampling.n;
      ++num_submitted;
      if (rng() % 6 == 0) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        engine->abort(id);
      }
      if (rng() % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  std::thread a(client, 0), b(client, 1);
  for (int ms = 0; num_submitted < 60 && ms < 10000; ++ms) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  fake->hold_ = false;
  a.join();
  b.join();
  ASSERT_TRUE(collector.wait_finished(num_choices));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(collector.num_finished(), num_choices.load());
  int aborted = 0;
  for (const auto& [id, pm] : submitted) {
    for (int index = 0; index < 2; ++index) {
      auto c = collector.get(id, index);
      if (index == 1 && c.num_finished == 0) continue;  // n == 1
      EXPECT_EQ(c.num_finished, 1) << id << "/" << index;
      if (c.last.finish_reason == FinishReason::kAbort) {
        ++aborted;
        continue;
      }
      std::vector<int32_t> tokens = pm.first, expected;
      for (int i = 0; i < pm.second; ++i) {
        expected.push_back(FakeBackend::next_token(tokens, FakeBackend::Mode::kHash));
        tokens.push_back(expected.back());
      }
      EXPECT_EQ(c.tokens, expected) << id << "/" << index;
      EXPECT_EQ(c.last.finish_reason, FinishReason::kLength) << id;
    }
  }
  EXPECT_GT(aborted, 0);
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.num_kv_blocks_used, 0);
  EXPECT_EQ(stats.num_running + stats.num_waiting, 0);
  EXPECT_GT(stats.num_preemptions, 0);
  EXPECT_GT(stats.prefix_cache_hits, 0);
}

}  // namespace
}  // namespace tandem::engine
