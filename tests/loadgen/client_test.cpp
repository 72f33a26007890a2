// The streaming client against the stub server: timings equal the server's actual send times, faults
// become failures with reasons, concurrency and arrival limits hold, request bodies are right.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <map>

#include "loadgen/metrics.h"
#include "loadgen/openai_client.h"
#include "loadgen/serve_benchmark.h"
#include "stub_openai_server.h"

namespace tandem::loadgen {
namespace {

using testing::StubOpenAIServer;
using testing::StubScript;

std::unique_ptr<OpenAIClient> make_client(const StubOpenAIServer& server, const std::string& endpoint = "/v1/completions") {
  ClientOptions options;
  options.base_url = server.base_url();
  options.endpoint = endpoint;
  options.model = "stub";
  options.ignore_eos = true;
  auto client = OpenAIClient::create(options);
  EXPECT_TRUE(client.ok()) << client.status().to_string();
  return std::move(*client);
}

std::vector<BenchRequest> prompts(const std::vector<std::string>& texts, int32_t output_len = 8) {
  std::vector<BenchRequest> requests;
  for (const auto& t : texts) requests.push_back({t, -1, output_len});
  return requests;
}

std::vector<RequestResult> run_all(OpenAIClient& client, const std::vector<BenchRequest>& requests, int32_t max_concurrency = 0) {
  int64_t start_ns = 0;
  return client.run(requests, std::vector<double>(requests.size(), 0.0), max_concurrency, {}, start_ns);
}

// Scripted gaps differ per request: "p<i>" gets a first gap of 20+7i ms and a fixed irregular pattern.
StubScript timing_script(const std::string& prompt) {
  const int i = std::stoi(prompt.substr(1));
  StubScript s;
  s.gaps_ms = {20.0 + 7 * i, 12, 3, 25, 1, 15, 8, 0, 30, 5};
  return s;
}

// One attempt of the timing comparison; returns the largest disagreement in ms (and fills why).
double worst_timing_error_ms(std::string& why) {
  StubOpenAIServer server(timing_script);
  auto client = make_client(server);
  std::vector<std::string> texts;
  for (int i = 0; i < 6; ++i) texts.push_back("p" + std::to_string(i));
  auto requests = prompts(texts);
  auto results = run_all(*client, requests);
  std::map<std::string, testing::StubRecord> sent;
  for (auto& rec : server.wait_for_records(texts.size())) sent[rec.prompt] = rec;
  double worst = 0;
  // The server wrote each token between sent_ns (just before its write) and sent_end_ns (just after): a
  // measurement is off by its distance from that interval.
  auto check = [&](const std::string& what, double measured_ms, double truth_lo_ms, double truth_hi_ms) {
    double err = measured_ms < truth_lo_ms ? truth_lo_ms - measured_ms : std::max(0.0, measured_ms - truth_hi_ms);
    if (err > worst) {
      worst = err;
      why = what + " measured " + std::to_string(measured_ms) + " ms, server says [" + std::to_string(truth_lo_ms) +
            ", " + std::to_string(truth_hi_ms) + "] ms";
    }
  };
  for (size_t i = 0; i < results.size(); ++i) {
    const RequestResult& r = results[i];
    EXPECT_TRUE(r.success) << r.error;
    if (sent.count(texts[i]) == 0) {
      ADD_FAILURE() << "the stub has no record of " << texts[i];
      return 1e9;
    }
    const auto& rec = sent.at(texts[i]);
    const std::vector<int64_t>& s = rec.sent_ns;
    const std::vector<int64_t>& e = rec.sent_end_ns;
    EXPECT_EQ(r.chunk_ns.size(), s.size());
    EXPECT_EQ(e.size(), s.size());
    EXPECT_EQ(r.usage_completion_tokens, 10);
    if (!r.success || r.chunk_ns.size() != s.size()) return 1e9;
    // The stub follows its script (timers never fire early); the client must see those times.
    StubScript script = timing_script(texts[i]);
    EXPECT_GE(static_cast<double>(s[0] - rec.received_ns) * 1e-6, script.gaps_ms[0] - 0.05);
    const int32_t n = output_tokens_of(r, nullptr);
    const double ms = 1e-6;
    check("TTFT of " + texts[i], r.ttft_s() * 1e3, static_cast<double>(s.front() - r.start_ns) * ms,
          static_cast<double>(e.front() - r.start_ns) * ms);
    check("E2E of " + texts[i], r.latency_s() * 1e3, static_cast<double>(s.back() - r.start_ns) * ms,
          static_cast<double>(e.back() - r.start_ns) * ms);
    check("TPOT of " + texts[i], tpot_s_of(r, n) * 1e3, static_cast<double>(s.back() - e.front()) * ms / (n - 1),
          static_cast<double>(e.back() - s.front()) * ms / (n - 1));
    for (size_t k = 1; k < s.size(); ++k) {
      check("ITL " + std::to_string(k) + " of " + texts[i], static_cast<double>(r.chunk_ns[k] - r.chunk_ns[k - 1]) * ms,
            static_cast<double>(s[k] - e[k - 1]) * ms, static_cast<double>(e[k] - s[k - 1]) * ms);
    }
  }
  return worst;
}

TEST(OpenAIClient, TimingsEqualTheServersSendTimesWithin1ms) {
  // The truth is when the stub actually wrote each token (same monotonic clock). A loaded machine can
  // stall either thread for a moment, so a run may be repeated; a wrong definition fails every attempt.
  std::string why;
  double worst = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    worst = worst_timing_error_ms(why);
    if (worst < 1.0) break;
  }
  EXPECT_LT(worst, 1.0) << why;
}

TEST(OpenAIClient, FaultsAreFailuresWithReasons) {
  StubOpenAIServer server([](const std::string& prompt) {
    StubScript s;
    s.gaps_ms = testing::uniform_gaps(4, 1, 1);
    if (prompt == "http500") s.fault = StubScript::Fault::kHttp500;
    if (prompt == "drop") { s.fault = StubScript::Fault::kDropAfter; s.fault_after_tokens = 2; }
    if (prompt == "drop0") { s.fault = StubScript::Fault::kDropAfter; s.fault_after_tokens = 0; }
    if (prompt == "malformed") { s.fault = StubScript::Fault::kMalformedAfter; s.fault_after_tokens = 1; }
    if (prompt == "error") { s.fault = StubScript::Fault::kErrorEventAfter; s.fault_after_tokens = 1; }
    if (prompt == "empty") s.gaps_ms.clear();
    return s;
  });
  auto client = make_client(server);
  std::vector<std::string> texts = {"ok", "http500", "drop", "drop0", "malformed", "error", "empty", "ok"};
  auto results = run_all(*client, prompts(texts));
  ASSERT_EQ(results.size(), texts.size());
  EXPECT_TRUE(results[0].success);
  EXPECT_TRUE(results[7].success);
  EXPECT_NE(results[1].error.find("HTTP 500"), std::string::npos) << results[1].error;
  EXPECT_NE(results[1].error.find("stub says no"), std::string::npos) << results[1].error;
  EXPECT_NE(results[2].error.find("closed"), std::string::npos) << results[2].error;
  EXPECT_NE(results[3].error.find("closed"), std::string::npos) << results[3].error;
  EXPECT_NE(results[4].error.find("malformed SSE"), std::string::npos) << results[4].error;
  EXPECT_NE(results[5].error.find("stub engine died"), std::string::npos) << results[5].error;
  EXPECT_NE(results[6].error.find("without any text"), std::string::npos) << results[6].error;
  for (size_t i = 1; i < 7; ++i) EXPECT_FALSE(results[i].success) << texts[i];
  RunMetrics m = compute_metrics(results, results[0].start_ns, 1.0, {99}, SloConfig{}, nullptr);
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 6);
  int32_t counted = 0;
  for (const auto& [reason, count] : m.failure_reasons) counted += count;
  EXPECT_EQ(counted, 6);
}

TEST(OpenAIClient, UnreachableServerFailsEveryRequestWithoutCrashing) {
  ClientOptions options;
  options.base_url = "http://127.0.0.1:1";
  auto client = OpenAIClient::create(options);
  ASSERT_TRUE(client.ok());
  EXPECT_FALSE((*client)->check_reachable(2.0).ok());
  auto results = run_all(**client, prompts({"a", "b"}));
  for (const auto& r : results) {
    EXPECT_FALSE(r.success);
    EXPECT_NE(r.error.find("cannot connect"), std::string::npos) << r.error;
  }
}

TEST(OpenAIClient, SlowStreamFailsWithATimeout) {
  StubOpenAIServer server([](const std::string& prompt) {
    StubScript s;
    s.gaps_ms = prompt == "slow" ? std::vector<double>{5, 3000} : std::vector<double>{1, 1};
    return s;
  });
  ClientOptions options;
  options.base_url = server.base_url();
  options.request_timeout_s = 0.3;
  auto client = OpenAIClient::create(options).value();
  const int64_t before = steady_now_ns();
  auto results = run_all(*client, prompts({"slow", "fast"}));
  EXPECT_LT(static_cast<double>(steady_now_ns() - before) * 1e-9, 2.0);  // did not wait for the slow token
  EXPECT_FALSE(results[0].success);
  EXPECT_NE(results[0].error.find("timed out"), std::string::npos) << results[0].error;
  EXPECT_EQ(results[0].chunk_ns.size(), 1u);
  EXPECT_TRUE(results[1].success) << results[1].error;
}

TEST(OpenAIClient, MaxConcurrencyLimitsRequestsInFlight) {
  StubOpenAIServer server([](const std::string&) {
    StubScript s;
    s.gaps_ms = testing::uniform_gaps(3, 10, 10);
    return s;
  });
  auto client = make_client(server);
  auto results = run_all(*client, prompts(std::vector<std::string>(8, "x")), 2);
  for (const auto& r : results) EXPECT_TRUE(r.success) << r.error;
  EXPECT_LE(server.peak_in_flight(), 2);
  EXPECT_EQ(server.peak_in_flight(), 2);
  RunMetrics m = compute_metrics(results, results[0].start_ns, 1.0, {}, SloConfig{}, nullptr);
  EXPECT_LE(m.peak_concurrent_requests, 2);
}

TEST(OpenAIClient, RequestsLeaveAtTheirArrivalTimes) {
  StubOpenAIServer server([](const std::string&) {
    StubScript s;
    s.gaps_ms = {1};
    return s;
  });
  auto client = make_client(server);
  std::vector<double> offsets = {0, 0.010, 0.050, 0.051, 0.120};
  // Never early; late by less than 5 ms in at least one of three attempts (a loaded machine can delay the
  // event loop's timer once in a while; a wrong schedule is wrong every time).
  double worst_late_ms = 1e9;
  for (int attempt = 0; attempt < 3 && worst_late_ms >= 5.0; ++attempt) {
    int64_t run_start_ns = 0;
    auto results = client->run(prompts(std::vector<std::string>(5, "x")), offsets, 0, {}, run_start_ns);
    worst_late_ms = 0;
    for (size_t i = 0; i < offsets.size(); ++i) {
      ASSERT_TRUE(results[i].success);
      const double late_ms = static_cast<double>(results[i].start_ns - run_start_ns) * 1e-6 - offsets[i] * 1e3;
      EXPECT_GE(late_ms, -0.01) << i;
      worst_late_ms = std::max(worst_late_ms, late_ms);
    }
  }
  EXPECT_LT(worst_late_ms, 5.0);
}

TEST(OpenAIClient, SendsCompletionAndChatBodies) {
  StubOpenAIServer server([](const std::string&) {
    StubScript s;
    s.gaps_ms = {0, 0};
    return s;
  });
  auto completions = make_client(server);
  auto chat = make_client(server, "/v1/chat/completions");
  auto a = run_all(*completions, prompts({"hello world"}, 7));
  auto b = run_all(*chat, prompts({"hi chat"}, 9));
  ASSERT_TRUE(a[0].success) << a[0].error;
  ASSERT_TRUE(b[0].success) << b[0].error;
  EXPECT_EQ(b[0].generated_text, "w0 w1 ");
  auto records = server.wait_for_records(2);
  ASSERT_EQ(records.size(), 2u);
  for (const auto& rec : records) {
    auto body = nlohmann::json::parse(rec.body);
    EXPECT_EQ(body["model"], "stub");
    EXPECT_EQ(body["stream"], true);
    EXPECT_EQ(body["stream_options"]["include_usage"], true);
    EXPECT_EQ(body["ignore_eos"], true);
    if (rec.path == "/v1/completions") {
      EXPECT_EQ(body["prompt"], "hello world");
      EXPECT_EQ(body["max_tokens"], 7);
    } else {
      EXPECT_EQ(rec.path, "/v1/chat/completions");
      EXPECT_EQ(body["messages"][0]["content"], "hi chat");
      EXPECT_EQ(body["messages"][0]["role"], "user");
      EXPECT_EQ(body["max_completion_tokens"], 9);
    }
  }
}

TEST(ServeBenchmark, SweepRecordsServerMetricDeltasAndTimelines) {
  StubOpenAIServer server([](const std::string&) {
    StubScript s;
    s.gaps_ms = testing::uniform_gaps(4, 2, 2);
    return s;
  });
  auto client = make_client(server);
  ServeBenchmarkOptions options;
  options.client = client->options();
  options.request_rates = {200.0, kInfiniteRate};
  options.num_warmups = 1;
  options.progress = ProgressMode::kNone;
  options.goodput = {"ttft:1000"};
  auto codec = make_word_codec();
  options.random.input_len = 12;
  options.random.output_len = 4;
  options.num_prompts = 10;
  auto requests = build_dataset(options, codec.get());
  ASSERT_TRUE(requests.ok());
  std::FILE* sink = std::tmpfile();
  auto doc = run_serve_benchmark(options, *client, *requests, codec.get(), sink);
  std::fclose(sink);
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  const nlohmann::json& j = *doc;
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][0]["request_rate"], 200.0);
  EXPECT_EQ(j["runs"][1]["request_rate"], "inf");
  for (const auto& run : j["runs"]) {
    EXPECT_EQ(run["completed"], 10);
    EXPECT_EQ(run["total_input_tokens"], 120);
    EXPECT_EQ(run["total_output_tokens"], 40);
    EXPECT_EQ(run["good_requests"], 10);
    EXPECT_EQ(run["prompt_len_mismatches"], 0);
    const auto& delta = run["server_metrics_delta"];
    EXPECT_EQ(delta["tandem_stub_requests_total"], 10.0) << delta.dump();
    EXPECT_EQ(delta["vllm:generation_tokens_total{model_name=\"stub\"}"], 40.0) << delta.dump();
    EXPECT_FALSE(delta.contains("tandem_stub_gauge"));
    EXPECT_FALSE(run["timeline"]["output_throughput"].empty());
    EXPECT_EQ(run["requests"].size(), 10u);
    EXPECT_EQ(run["requests"][0]["itl_ms"].size(), 3u);
  }
}

}  // namespace
}  // namespace tandem::loadgen
