// Migration end to end (issue 22): the real `tandem` frontend and workers on loopback. A stream whose
// decode worker is killed (SIGKILL) mid-stream continues on another worker: the client sees no error
// event, and the tokens and text equal those of an undisturbed run (greedy on the CPU model; greedy
// and seeded sampling on fake-engine workers with a real tokenizer). Of 100 concurrent streams, with
// one of their workers killed, none fails. Requests of several choices (n = 2, and a list of prompts)
// move choice by choice, streamed or not, and end with the undisturbed run's tokens and text.
// tandem_requests_migrated_total counts the moves.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <regex>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

std::string qwen3_tokenizer() { return std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3"; }

// What a client got from one stream.
struct Streamed {
  int status = 0;
  std::vector<int> token_ids;
  std::string text;
  std::string finish_reason;
  int error_events = 0;
  bool done = false;
};

std::string stream_body(const std::string& prompt_ids, int max_tokens, const std::string& sampling) {
  return R"({"prompt":[)" + prompt_ids + R"(],"max_tokens":)" + std::to_string(max_tokens) +
         R"(,"stream":true,"return_token_ids":true,"ignore_eos":true,)" + sampling + "}";
}

// What a client got, choice by choice (by the response's choice index), streamed or not.
struct Choices {
  int status = 0;
  std::map<int, std::vector<int>> token_ids;
  std::map<int, std::string> text;
  std::map<int, std::string> finish_reason;
  int error_events = 0;
  bool done = false;  // streamed: [DONE] came; not streamed: a 200 body with choices
};

Choices parse_choices(const HttpResponse& r, bool streamed) {
  Choices s;
  s.status = r.status;
  auto add = [&s](const json& c) {
    const int i = c.value("index", -1);
    s.text[i] += c.value("text", "");
    for (const auto& t : c.value("token_ids", json::array())) s.token_ids[i].push_back(t.get<int>());
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) s.finish_reason[i] = c["finish_reason"];
  };
  if (!streamed) {
    const json j = json::parse(r.body, nullptr, false);
    if (j.is_discarded() || j.contains("error")) {
      s.error_events = 1;
      return s;
    }
    for (const auto& c : j.value("choices", json::array())) add(c);
    s.done = r.status == 200 && !s.text.empty();
    return s;
  }
  for (const auto& e : sse_events(r.body)) {
    if (e == "[DONE]") {
      s.done = true;
      continue;
    }
    const json j = json::parse(e, nullptr, false);
    if (j.is_discarded() || j.contains("error")) {
      ++s.error_events;
      continue;
    }
    for (const auto& c : j.value("choices", json::array())) add(c);
  }
  return s;
}

// A stream of one choice (index 0).
Streamed parse_stream(const HttpResponse& r) {
  Choices c = parse_choices(r, /*streamed=*/true);
  return Streamed{c.status, std::move(c.token_ids[0]), std::move(c.text[0]), std::move(c.finish_reason[0]), c.error_events,
                  c.done};
}

// What every migrated response must be: no error, ended as usual, with the undisturbed run's tokens,
// text and finish reasons (Streamed or Choices).
template <typename Response>
void expect_as_undisturbed(const Response& migrated, const Response& reference, const std::string& what = "") {
  EXPECT_EQ(migrated.status, 200) << what;
  EXPECT_EQ(migrated.error_events, 0) << what;
  EXPECT_TRUE(migrated.done) << what;
  EXPECT_EQ(migrated.token_ids, reference.token_ids) << what;
  EXPECT_EQ(migrated.text, reference.text) << what;
  EXPECT_EQ(migrated.finish_reason, reference.finish_reason) << what;
}

// A completions body with `n` choices for one prompt (or each of a list: "[[...],[...]]").
std::string choices_body(const std::string& prompt, int max_tokens, int n, bool stream, const std::string& sampling) {
  return R"({"prompt":)" + prompt + R"(,"max_tokens":)" + std::to_string(max_tokens) + R"(,"n":)" + std::to_string(n) +
         R"(,"stream":)" + (stream ? "true" : "false") + R"(,"return_token_ids":true,"ignore_eos":true,)" + sampling + "}";
}

// The decode worker of the frontend's nth routing decision (its event=route lines, in order).
std::string routed_worker(Cluster& cluster, size_t nth) {
  const std::string log = cluster.log("frontend");
  static const std::regex route(R"(event=route .*decode_worker=(\S+))");
  size_t i = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), route); it != std::sregex_iterator(); ++it, ++i) {
    if (i == nth) return (*it)[1];
  }
  return "";
}

// Sends `body` (on a thread), waits until the frontend has counted `kill_after` generated tokens
// beyond `tokens_before`, kills the decode worker of the frontend's `route_index`th routing decision
// (the request's, or one part's of a list of prompts), and returns the response.
HttpResponse post_and_kill(Cluster& cluster, const std::string& body, size_t route_index, double tokens_before,
                           double kill_after, std::string* killed) {
  HttpResponse response;
  std::thread client([&] { response = cluster.post("/v1/completions", body, 120000); });
  const bool streaming =
      eventually([&] { return cluster.metric("vllm:generation_tokens_total") >= tokens_before + kill_after; }, 60000, 5);
  EXPECT_TRUE(streaming) << "the stream never got going";
  *killed = routed_worker(cluster, route_index);
  static const std::regex name(R"(both-(\d+))");
  std::smatch m;
  const int index = std::regex_match(*killed, m, name) ? std::stoi(m[1]) : -1;
  EXPECT_GE(index, 0) << "no route line for the request: " << *killed;
  if (index >= 0) cluster.worker(index).kill_now();
  client.join();
  return response;
}

Streamed stream_and_kill(Cluster& cluster, const std::string& body, size_t route_index, double tokens_before,
                         double kill_after, std::string* killed) {
  return parse_stream(post_and_kill(cluster, body, route_index, tokens_before, kill_after, killed));
}

// The real CPU model, greedy: the migrated stream's tokens are exactly the undisturbed run's.
TEST(Migration, GreedyStreamSurvivesItsDecodeWorkersSigkillWithTheSameTokens) {
  Cluster cluster;
  for (int i = 0; i < 2; ++i) cluster.add_worker("both", {"--model", "random:tiny-qwen3", "--num-kv-blocks", "256"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::string body = stream_body(random_prompt_ids(40, 11), 400, R"("temperature":0)");
  const Streamed reference = parse_stream(cluster.post("/v1/completions", body));
  ASSERT_EQ(reference.status, 200);
  ASSERT_EQ(reference.token_ids.size(), 400u);
  ASSERT_EQ(reference.error_events, 0);

  std::string killed;
  const double before = cluster.metric("vllm:generation_tokens_total");
  const Streamed migrated = stream_and_kill(cluster, body, 1, before, 30, &killed);
  expect_as_undisturbed(migrated, reference);
  EXPECT_EQ(migrated.finish_reason, "length");
  EXPECT_EQ(cluster.metric("tandem_requests_migrated_total"), 1);
  EXPECT_EQ(cluster.metric("tandem_requests_failed_total"), 0);
  EXPECT_NE(cluster.log("frontend").find("event=request_migrated"), std::string::npos);
}

// Fake-engine workers with the Qwen3 tokenizer: the text streams on without a repeated or lost byte,
// for greedy and for a seeded sampled stream (its draws continue their positions on the new worker).
TEST(Migration, TextAndSeededSamplingContinueAsIfNothingHappened) {
  if (!std::filesystem::exists(qwen3_tokenizer() + "/tokenizer.json")) GTEST_SKIP() << "no Qwen3 tokenizer";
  Cluster cluster({"--tokenizer", qwen3_tokenizer()});
  for (int i = 0; i < 3; ++i) {
    cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-step-ms", "10"});
  }
  ASSERT_TRUE(cluster.wait_for_workers(3));
  size_t routes = 0;
  for (const std::string sampling : {R"("temperature":0)", R"("temperature":0.8,"seed":1234)"}) {
    const std::string body = stream_body(random_prompt_ids(30, 5), 120, sampling);
    const Streamed reference = parse_stream(cluster.post("/v1/completions", body));
    ++routes;
    ASSERT_EQ(reference.status, 200);
    ASSERT_EQ(reference.token_ids.size(), 120u);
    ASSERT_FALSE(reference.text.empty());
    std::string killed;
    const Streamed migrated =
        stream_and_kill(cluster, body, routes++, cluster.metric("vllm:generation_tokens_total"), 25, &killed);
    expect_as_undisturbed(migrated, reference, sampling);
  }
  EXPECT_EQ(cluster.metric("tandem_requests_migrated_total"), 2);
}

// n = 2 on the real CPU model: every choice of the killed worker's request goes on elsewhere and ends
// with exactly the undisturbed run's tokens, for seeded sampling (each choice's draws continue at its
// own index and position) and for greedy, streamed and not.
TEST(Migration, SeveralChoicesSurviveTheirDecodeWorkersSigkillWithTheSameTokens) {
  Cluster cluster;
  for (int i = 0; i < 3; ++i) cluster.add_worker("both", {"--model", "random:tiny-qwen3", "--num-kv-blocks", "256"});
  ASSERT_TRUE(cluster.wait_for_workers(3));
  struct Case {
    std::string sampling;
    bool stream;
  };
  // Two cases, one seeded and streamed, one greedy and whole: under ASan each token step of the real
  // model is slow, and four cases of 160 tokens came near ctest's 300 s limit.
  const Case cases[] = {{R"("temperature":0.9,"seed":77)", true}, {R"("temperature":0)", false}};
  size_t routes = 0;
  for (const Case& k : cases) {
    const std::string what = k.sampling + (k.stream ? " streamed" : " not streamed");
    const std::string body = choices_body("[" + random_prompt_ids(40, 12) + "]", 96, 2, k.stream, k.sampling);
    const Choices reference = parse_choices(cluster.post("/v1/completions", body, 120000), k.stream);
    ++routes;
    ASSERT_EQ(reference.status, 200) << what;
    ASSERT_EQ(reference.token_ids.size(), 2u) << what;
    ASSERT_EQ(reference.token_ids.at(0).size(), 96u) << what;
    ASSERT_EQ(reference.token_ids.at(1).size(), 96u) << what;
    // Seeded: two different draws, so a choice continued with the other's randomness would show.
    if (k.sampling.find("seed") != std::string::npos) {
      ASSERT_NE(reference.token_ids.at(0), reference.token_ids.at(1)) << what;
    }
    std::string killed;
    const double before = cluster.metric("vllm:generation_tokens_total");
    const Choices migrated = parse_choices(post_and_kill(cluster, body, routes++, before, 40, &killed), k.stream);
    expect_as_undisturbed(migrated, reference, what);
  }
  EXPECT_EQ(cluster.metric("tandem_requests_migrated_total"), 2);
  EXPECT_EQ(cluster.metric("tandem_requests_failed_total"), 0);
  EXPECT_NE(cluster.log("frontend").find("event=request_migrated request_id="), std::string::npos);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// Fake-engine workers with the Qwen3 tokenizer: a list of prompts, each with two sampled choices,
// streamed; the worker of one part is killed, and every choice's text and tokens come out as in an
// undisturbed run.
TEST(Migration, AListOfPromptsWithSeveralChoicesContinuesChoiceByChoice) {
  if (!std::filesystem::exists(qwen3_tokenizer() + "/tokenizer.json")) GTEST_SKIP() << "no Qwen3 tokenizer";
  Cluster cluster({"--tokenizer", qwen3_tokenizer()});
  for (int i = 0; i < 3; ++i) {
    cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-step-ms", "10"});
  }
  ASSERT_TRUE(cluster.wait_for_workers(3));
  const std::string prompts = "[[" + random_prompt_ids(30, 6) + "],[" + random_prompt_ids(30, 7) + "]]";
  const std::string body = choices_body(prompts, 100, 2, true, R"("temperature":0.8,"seed":3)");
  const Choices reference = parse_choices(cluster.post("/v1/completions", body), true);
  ASSERT_EQ(reference.status, 200);
  ASSERT_EQ(reference.token_ids.size(), 4u);  // two prompts x two choices
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(reference.token_ids.at(i).size(), 100u) << i;
    ASSERT_FALSE(reference.text.at(i).empty()) << i;
  }
  ASSERT_NE(reference.token_ids.at(0), reference.token_ids.at(1));
  std::string killed;
  // Route lines 0 and 1 are the reference's parts; 2 is the first part of this one.
  const Choices migrated =
      parse_choices(post_and_kill(cluster, body, 2, cluster.metric("vllm:generation_tokens_total"), 80, &killed), true);
  expect_as_undisturbed(migrated, reference);
  EXPECT_GE(cluster.metric("tandem_requests_migrated_total"), 1);
  EXPECT_EQ(cluster.metric("tandem_requests_failed_total"), 0);
}

// 100 concurrent streams over three workers; one worker is killed while they run: none fails.
TEST(Migration, HundredStreamsWithOneDecodeWorkerKilledNoneFails) {
  Cluster cluster;
  for (int i = 0; i < 3; ++i) cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(3));
  constexpr int kStreams = 100;
  constexpr int kTokens = 60;
  std::vector<std::string> bodies;
  std::vector<Streamed> reference(kStreams), got(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    bodies.push_back(stream_body(random_prompt_ids(24, 100 + i), kTokens,
                                 i % 2 ? R"("temperature":0)" : R"("temperature":1.0,"seed":)" + std::to_string(i)));
  }
  auto run_all = [&](std::vector<Streamed>& out, const std::function<void()>& meanwhile) {
    std::vector<std::thread> clients;
    for (int i = 0; i < kStreams; ++i) {
      clients.emplace_back([&, i] { out[i] = parse_stream(cluster.post("/v1/completions", bodies[i], 120000)); });
    }
    meanwhile();
    for (auto& t : clients) t.join();
  };
  run_all(reference, [] {});
  for (int i = 0; i < kStreams; ++i) ASSERT_EQ(reference[i].token_ids.size(), static_cast<size_t>(kTokens)) << i;
  const double before = cluster.metric("vllm:generation_tokens_total");
  run_all(got, [&] {
    // A third of the way in, every worker is streaming: kill one.
    eventually([&] { return cluster.metric("vllm:generation_tokens_total") >= before + kStreams * kTokens / 3; }, 60000, 5);
    cluster.worker(1).kill_now();
  });
  int failed = 0;
  for (int i = 0; i < kStreams; ++i) {
    const bool ok = got[i].status == 200 && got[i].error_events == 0 && got[i].done &&
                    got[i].token_ids == reference[i].token_ids;
    if (!ok) ++failed;
    EXPECT_TRUE(ok) << "stream " << i << ": status " << got[i].status << ", " << got[i].error_events
                    << " error events, " << got[i].token_ids.size() << " tokens";
  }
  EXPECT_EQ(failed, 0);
  EXPECT_GT(cluster.metric("tandem_requests_migrated_total"), 0);
  EXPECT_EQ(cluster.metric("tandem_requests_failed_total"), 0);
}

// --migration-limit 0 keeps the old behaviour: the stream ends with an error event.
TEST(Migration, LimitZeroFailsTheStreamAsBefore) {
  Cluster cluster({"--migration-limit", "0"});
  for (int i = 0; i < 2; ++i) cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::string killed;
  const Streamed s = stream_and_kill(cluster, stream_body(random_prompt_ids(20, 3), 100, R"("temperature":0)"), 0,
                                     cluster.metric("vllm:generation_tokens_total"), 10, &killed);
  EXPECT_EQ(s.error_events, 1);
  EXPECT_EQ(cluster.metric("tandem_requests_migrated_total"), 0);
}

}  // namespace
}  // namespace tandem::testing
