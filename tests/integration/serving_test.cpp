// End-to-end serving tests: the real `tandem` binary as frontend and workers on loopback
// (DESIGN.md §2). Each test starts its own cluster on ephemeral ports and checks at the end that
// no worker holds a KV block (from the workers' heartbeats, as /metrics shows them).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <memory>
#include <thread>

#include "harness.h"
#include "testing/dependencies.h"
#include "testing/wait.h"

namespace tandem::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const char* kModel = "random:tiny-qwen3";

std::vector<int> ids_of(const HttpResponse& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("choices")) return {};
  return j["choices"][0]["token_ids"].get<std::vector<int>>();
}


std::string run_generate(const std::string& ids, int max_tokens) {
  std::string command = std::string(TANDEM_BINARY) + " generate --model " + kModel + " --threads 1 --prompt-ids " + ids +
                        " --max-tokens " + std::to_string(max_tokens) + " 2>/dev/null";
  return shell(command);
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out;
}

TEST(Serving, GreedyTokens_RemotePrefillEqualsLocalEqualsGenerate) {
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", kModel, "--num-kv-blocks", "256"});
  cluster.add_worker("decode", {"--model", kModel, "--num-kv-blocks", "256"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  for (int seed : {1, 2}) {
    const std::string ids = random_prompt_ids(150, seed);
    const std::string body = R"({"prompt":[)" + ids + R"(],"max_tokens":12,"temperature":0,"return_token_ids":true})";
    HttpResponse remote = cluster.post("/v1/completions", body);
    ASSERT_EQ(remote.status, 200) << remote.body;
    ASSERT_EQ(cluster.post("/v1/tandem/router", R"({"max_local_prefill":100000})").status, 200);
    HttpResponse local = cluster.post("/v1/completions", body);
    ASSERT_EQ(local.status, 200) << local.body;
    ASSERT_EQ(cluster.post("/v1/tandem/router", R"({"max_local_prefill":64})").status, 200);
    EXPECT_EQ(ids_of(remote).size(), 12u);
    EXPECT_EQ(ids_of(remote), ids_of(local));
    EXPECT_EQ(join(ids_of(remote)), run_generate(ids, 12));
  }
  std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_local_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_GT(metric_value(m, "tandem_kv_transfer_bytes_total"), 0);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, Router_DecidesByPromptLengthAndByFullPrefillQueue) {
  Cluster cluster({"--max-local-prefill", "50", "--max-prefill-queue", "2"});
  // 300 tokens at 2 ms each: a remote prefill holds its queue slot ~0.6 s.
  cluster.add_worker("prefill", {"--engine", "fake", "--fake-prefill-us-per-token", "2000"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "1"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(300, 10 + i) + R"(],"max_tokens":4})");
      if (r.status == 200) ++ok;
    });
    // One at a time: each is routed before the next is sent (EXPECT: the threads must be joined).
    EXPECT_TRUE(wait_until([&] { return cluster.metric("tandem_router_decisions_total") >= i + 1; })) << "request " << i << " never routed";
  }
  HttpResponse short_one = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})");
  EXPECT_EQ(short_one.status, 200);
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_router_decisions_total", "decision=\"remote\",reason=\"long_prompt\""), 2);
  EXPECT_EQ(metric_value(m, "tandem_router_decisions_total", "decision=\"local\",reason=\"prefill_queue_full\""), 2);
  EXPECT_EQ(metric_value(m, "tandem_router_decisions_total", "decision=\"local\",reason=\"short_prompt\""), 1);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_local_prefills_total"), 3);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// A remote prefill holds its place in the prefill queue until its KV is on the decode worker, not
// until the decode worker's next step produces the first token. The decode worker is busy with 2 s
// steps (a short local request keeps it stepping), so a remote prefill's first token comes up to 2 s
// after its KV; as soon as the KV is reported, a second long prompt finds the queue (of one) free and
// goes remote.
TEST(Serving, RemotePrefillLeavesTheQueueWhenItsKvArrives) {
  Cluster cluster({"--max-local-prefill", "50", "--max-prefill-queue", "1"});
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "2000"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::atomic<bool> first_done{false};
  std::atomic<int> ok{0};
  std::thread busy([&] {
    if (cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})").status == 200) ++ok;
  });
  // The busy request's 2 s step starts first: the decode worker reports it running.
  EXPECT_TRUE(wait_until([&] { return cluster.metric("vllm:num_requests_running", "worker=\"decode-1\"") >= 1; }));
  std::thread first([&] {
    HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(300, 41) + R"(],"max_tokens":2})");
    if (r.status == 200) ++ok;
    first_done = true;
  });
  std::string m;
  EXPECT_TRUE(wait_until([&] {
    m = cluster.metrics();
    return metric_value(m, "tandem_remote_prefills_total") == 1 && metric_value(m, "tandem_prefill_queue_depth") == 0;
  })) << "the decode worker did not report the prefill as done, or the queue kept it:\n" << m;
  EXPECT_FALSE(first_done.load()) << "the first request should still be waiting for its decode step";
  HttpResponse second = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(300, 42) + R"(],"max_tokens":2})");
  EXPECT_EQ(second.status, 200) << second.body;
  first.join();
  busy.join();
  EXPECT_EQ(ok.load(), 2);
  m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_router_decisions_total", "decision=\"remote\",reason=\"long_prompt\""), 2);
  EXPECT_EQ(metric_value(m, "tandem_router_decisions_total", "decision=\"local\",reason=\"prefill_queue_full\""), 0);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, PrefillWorkerKilled_RequestsFallBackToLocalPrefill) {
  Cluster cluster({"--max-local-prefill", "50", "--max-prefill-queue", "100"});
  int prefill = cluster.add_worker("prefill", {"--engine", "fake", "--fake-prefill-us-per-token", "3000"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "1"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(200, 20 + i) + R"(],"max_tokens":5,"return_token_ids":true})");
      if (r.status == 200 && ids_of(r).size() == 5) ++ok;
    });
  }
  // Killed with remote prefills in flight: all six routed (remote: the queue holds 100), some queued.
  EXPECT_TRUE(wait_until([&] {
    return cluster.metric("tandem_router_decisions_total") >= 6 && cluster.metric("tandem_prefill_queue_depth") >= 1;
  }));
  cluster.worker(prefill).kill_now();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  std::string m = cluster.metrics();
  EXPECT_GT(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  // With the prefill worker gone, new long prompts are prefilled locally. The frontend learns of the
  // death from its registry connection, which a loaded machine may deliver after the decode worker's
  // fallbacks have finished the requests above; wait for it rather than race it.
  wait_until([&] { return cluster.metric("tandem_workers", "role=\"prefill\"") == 0; }, 5s);
  ASSERT_EQ(cluster.metric("tandem_workers", "role=\"prefill\""), 0) << "the frontend never dropped the killed prefill worker";
  HttpResponse after = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(200, 99) + R"(],"max_tokens":3})");
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_GE(cluster.metric("tandem_router_decisions_total", "reason=\"no_prefill_worker\""), 1);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, PrefillWorkerHung_RemotePrefillTimesOutAndFallsBack) {
  Cluster cluster({"--max-local-prefill", "50", "--remote-prefill-timeout-ms", "500", "--heartbeat-timeout-ms", "60000"});
  int prefill = cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  ::kill(cluster.worker(prefill).pid(), SIGSTOP);  // alive to the kernel, silent to everyone
  auto start = std::chrono::steady_clock::now();
  HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(100, 5) + R"(],"max_tokens":4,"return_token_ids":true})");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ids_of(r).size(), 4u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 1);
  ::kill(cluster.worker(prefill).pid(), SIGCONT);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, DecodeWorkerHung_IsDroppedAfterItsHeartbeatsStop) {
  Cluster cluster({"--heartbeat-timeout-ms", "500"});
  int decode = cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  HttpResponse streamed;
  std::thread client([&] { streamed = cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":10000,"stream":true})", 10000); });
  EXPECT_TRUE(wait_until([&] { return cluster.metric("vllm:generation_tokens_total") >= 1; })) << "the stream never started";
  auto start = std::chrono::steady_clock::now();
  ::kill(cluster.worker(decode).pid(), SIGSTOP);
  client.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  auto events = sse_events(streamed.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_NE(events[events.size() - 2].find("\"error\""), std::string::npos);
  EXPECT_EQ(http(cluster.http_port(), "GET", "/health").status, 503);
  ::kill(cluster.worker(decode).pid(), SIGCONT);
}

TEST(Serving, DecodeWorkerKilled_StreamsEndWithAnErrorEvent) {
  Cluster cluster;
  int decode = cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  std::vector<std::thread> threads;
  std::atomic<int> ended_with_error{0};
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":10000,"stream":true})", 10000);
      auto events = sse_events(r.body);
      if (r.status == 200 && events.size() >= 2 && events.back() == "[DONE]" &&
          events[events.size() - 2].find("\"error\"") != std::string::npos) {
        ++ended_with_error;
      }
    });
  }
  // All three streaming on the worker before it dies.
  EXPECT_TRUE(wait_until([&] {
    return cluster.metric("vllm:num_requests_running") >= 3 && cluster.metric("vllm:generation_tokens_total") >= 3;
  }));
  auto start = std::chrono::steady_clock::now();
  cluster.worker(decode).kill_now();
  for (auto& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(ended_with_error.load(), 3);
  EXPECT_EQ(http(cluster.http_port(), "GET", "/health").status, 503);
}

TEST(Serving, DeviceFailureMidStep_FailsItsRequestsAndTheWorkerExits) {
  Cluster cluster;
  // The worker's 6th forward fails as a sticky device error would (the CUDA backend makes a real
  // illegal-address fault from the same variable: gpu_serving_test).
  setenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP", "6", 1);
  int worker = cluster.add_worker("both", {"--model", kModel});
  unsetenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(check_device_failure_path(cluster, worker, "both-0"), "");
}

TEST(Serving, WorkerFailingBeforeTheFirstToken_ItsRequestsAreReroutedAndComplete) {
  Cluster cluster;
  // Worker A's first forward fails as a device fault would; B is healthy. Requests routed to A fail there
  // before producing a token, and the frontend sends them to B: the clients never see the failure.
  setenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP", "1", 1);
  int a = cluster.add_worker("both", {"--model", kModel});
  unsetenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  cluster.add_worker("both", {"--model", kModel});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  constexpr int kRequests = 8;
  std::vector<std::thread> threads;
  std::vector<HttpResponse> responses(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      responses[i] = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(12, 60 + i) +
                                                         R"(],"max_tokens":5,"temperature":0,"return_token_ids":true})");
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_EQ(responses[i].status, 200) << i << ": " << responses[i].body;
    EXPECT_EQ(join(ids_of(responses[i])), run_generate(random_prompt_ids(12, 60 + i), 5)) << "request " << i;
  }
  EXPECT_GE(cluster.metric("tandem_requests_rerouted_total", "reason=\"worker_error\""), 1)
      << "no request reached the failing worker\n" << cluster.log("frontend");
  EXPECT_EQ(cluster.metric("tandem_requests_failed_total"), 0);
  EXPECT_TRUE(wait_until([&] { return !cluster.worker(a).running(); }, 15s)) << cluster.log("both-0");
  EXPECT_EQ(cluster.worker(a).exit_code(), 3);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, NoPrefixCaching_RepeatedLongPromptsStayRemote) {
  // A decode worker without a prefix cache: the router must not count the prompt it saw before as
  // cached (it would call a repeated long prompt "short" and prefill it locally).
  Cluster cluster({"--max-local-prefill", "16"});
  cluster.add_worker("prefill", {"--model", kModel, "--no-prefix-caching"});
  cluster.add_worker("decode", {"--model", kModel, "--no-prefix-caching"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::string body = R"({"prompt":[)" + random_prompt_ids(100, 5) + R"(],"max_tokens":3})";
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cluster.post("/v1/completions", body).status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "reason=\"long_prompt\""), 3);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 3);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, WorkerStartedLater_IsUsed) {
  Cluster cluster;
  HttpResponse health = http(cluster.http_port(), "GET", "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_NE(health.body.find("no worker"), std::string::npos) << health.body;
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").status, 503);
  cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(http(cluster.http_port(), "GET", "/health").status, 200);
  HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})");
  EXPECT_EQ(r.status, 200) << r.body;
  // A second decode worker added while serving takes load too. The router sends a request to the
  // worker with the fewest outstanding, so one request is held in flight (50 steps) before four more
  // are sent: whichever worker holds it, the new one (decode-1) serves at least one of the five.
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "5"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  auto send = [&](int max_tokens) {
    threads.emplace_back([&, max_tokens] {
      if (cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":)" + std::to_string(max_tokens) + "}").status == 200) ++ok;
    });
  };
  send(50);
  EXPECT_TRUE(wait_until([&] { return cluster.metric("tandem_worker_outstanding_requests") >= 1; }));
  for (int i = 0; i < 4; ++i) send(20);
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 5);
  std::string m = cluster.metrics();
  EXPECT_GT(metric_value(m, "vllm:prompt_tokens_total"), 0);
  const std::string log = cluster.log("frontend");
  EXPECT_NE(log.find("event=route request_id="), std::string::npos) << log;
  EXPECT_NE(log.find("decode_worker=decode-1 "), std::string::npos) << "the worker started later served nothing:\n" << log;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, HundredConcurrentStreams_AllComplete) {
  Cluster cluster;
  cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "2"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  std::vector<std::thread> threads;
  std::atomic<int> complete{0};
  for (int i = 0; i < 100; ++i) {
    threads.emplace_back([&, i] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(8, i) +
                                                           R"(],"max_tokens":20,"stream":true,"return_token_ids":true,"stream_options":{"include_usage":true}})");
      auto events = sse_events(r.body);
      int tokens = 0;
      int usage = -1;
      for (const auto& e : events) {
        if (e == "[DONE]") continue;
        auto j = json::parse(e, nullptr, false);
        if (j.is_discarded()) continue;
        for (const auto& c : j["choices"]) tokens += c.contains("token_ids") ? static_cast<int>(c["token_ids"].size()) : 0;
        if (j.contains("usage") && j["usage"].is_object()) usage = j["usage"]["completion_tokens"].get<int>();
      }
      if (r.status == 200 && tokens == 20 && usage == 20 && !events.empty() && events.back() == "[DONE]") ++complete;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(complete.load(), 100);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, BadRequests_GetOpenAiErrorsAndTheServerKeepsServing) {
  Cluster cluster({"--max-body-bytes", "4096"});
  cluster.add_worker("both", {"--engine", "fake", "--served-model-name", "m"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  struct Case {
    std::string path, body;
    int status;
    std::string param;
  };
  std::vector<Case> cases = {
      {"/v1/completions", R"({"prompt": [1,2,)", 400, ""},
      {"/v1/completions", R"({"prompt": [1,2], "max_tokens": "ten"})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": [1,2], "temperature": "hot"})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": [1,2], "max_tokens": -5})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": [1,2], "stream": 1})", 400, "stream"},
      {"/v1/completions", R"({"max_tokens": 3})", 400, "prompt"},
      {"/v1/chat/completions", R"({"messages": "hi"})", 400, "messages"},
      {"/v1/completions", R"({"prompt": [1,2], "model": "nope"})", 404, "model"},
      {"/v1/completions", R"({"prompt": [)" + random_prompt_ids(2000, 1) + "]}", 413, ""},
      {"/v1/nothing", R"({})", 404, ""},
      {"/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}})", 400,
       "response_format"},
  };
  for (const auto& c : cases) {
    HttpResponse r = cluster.post(c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 80) << " -> " << r.body;
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    if (!c.param.empty()) {
      EXPECT_EQ(j["error"]["param"], c.param) << r.body;
    }
  }
  HttpResponse good = cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2,"model":"m"})");
  EXPECT_EQ(good.status, 200) << good.body;
  EXPECT_FALSE(good.headers["x-request-id"].empty());
  HttpResponse tagged = http(cluster.http_port(), "POST", "/v1/completions", R"({"prompt":[1],"max_tokens":1})",
                             {{"X-Request-Id", "abc-123"}});
  EXPECT_EQ(tagged.headers["x-request-id"], "abc-123");
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// --num-kv-blocks sizes the fake engine's pool too (it was ignored there, so fake-engine load tests
// were capped at 4,096 blocks whatever the flag said); what cannot fit the pool is refused, not queued.
TEST(Serving, FakeWorkerTakesItsKvPoolSizeFromTheFlag) {
  Cluster cluster;
  cluster.add_worker("both", {"--engine", "fake", "--num-kv-blocks", "64"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_TRUE(wait_until([&] { return cluster.metric("tandem_worker_kv_blocks_total") == 64; }, 5s)) << "kv blocks reported: " << cluster.metric("tandem_worker_kv_blocks_total");
  // 3 + 1,200 tokens need 76 blocks of 16; 3 + 16 need 2.
  HttpResponse too_big = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":1200})");
  EXPECT_EQ(too_big.status, 413) << too_big.body;
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":16})").status, 200);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, ClientDisconnect_AbortsTheRequestAndFreesItsBlocks) {
  Cluster cluster({"--max-local-prefill", "20"});
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "10"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  for (const char* stream : {"true", "false"}) {
    for (int prompt_len : {5, 100}) {  // local and remote prefill
      HttpResponse r = http(cluster.http_port(), "POST", "/v1/completions",
                            R"({"prompt":[)" + random_prompt_ids(prompt_len, 3) + R"(],"max_tokens":10000,"stream":)" + stream + "}",
                            {{"Content-Type", "application/json"}}, /*timeout_ms=*/400);
      EXPECT_EQ(r.status, std::string(stream) == "true" ? 200 : 0);  // a non-streamed answer never came
    }
  }
  wait_until([&] { return cluster.metric("tandem_client_disconnects_total") >= 4; }, 5s);
  EXPECT_EQ(cluster.metric("tandem_client_disconnects_total"), 4);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, OfficialOpenAiNodeClient_Works) {
  std::string npm_dir = std::getenv("TANDEM_NPM_DIR") ? std::getenv("TANDEM_NPM_DIR") : std::string(TANDEM_DATA_DIR) + "/npm";
  TANDEM_SKIP_OR_FAIL_IF_MISSING(!std::filesystem::exists(npm_dir + "/node_modules/openai"),
                                 "the openai npm package in " << npm_dir << " (scripts/fetch_data.sh)");
  TANDEM_SKIP_OR_FAIL_IF_MISSING(std::system("node --version > /dev/null 2>&1") != 0, "node");
  const std::string tokenizer = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
  Cluster cluster({"--tokenizer", tokenizer});
  cluster.add_worker("both", {"--model", kModel, "--tokenizer", tokenizer, "--num-kv-blocks", "256"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  std::string command = "node " + std::string(TANDEM_SOURCE_DIR) + "/tests/integration/openai_client.mjs http://127.0.0.1:" +
                        std::to_string(cluster.http_port()) + " " + npm_dir + " 2>&1";
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  int status = pipe ? pclose(pipe) : -1;
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("openai client: ok"), std::string::npos) << out;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(Serving, WorkerSigterm_DrainsItsRequestsThenLeaves) {
  Cluster cluster;
  int decode = cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  HttpResponse streamed;
  std::thread client([&] {
    streamed = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":30,"stream":true,"return_token_ids":true})");
  });
  EXPECT_TRUE(wait_until([&] { return cluster.metric("vllm:generation_tokens_total") >= 1; })) << "the stream never started";
  cluster.worker(decode).terminate();  // SIGTERM, waits for the exit
  client.join();
  auto events = sse_events(streamed.body);
  int tokens = 0;
  for (const auto& e : events) {
    auto j = json::parse(e, nullptr, false);
    if (!j.is_discarded() && j.contains("choices") && !j["choices"].empty()) tokens += j["choices"][0].value("token_ids", json::array()).size();
    EXPECT_EQ(e.find("\"error\""), std::string::npos) << e;
  }
  EXPECT_EQ(tokens, 30);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(http(cluster.http_port(), "GET", "/health").status, 503);
}

TEST(Serving, FrontendSigterm_DrainsRunningRequestsThenExits) {
  Cluster cluster;
  cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  HttpResponse streamed;
  // 50 tokens at 20 ms: a second of streaming to drain. Waits are on what the frontend reports, not on
  // sleeps, so a slow (sanitized, loaded) run sees the same order of events.
  std::thread client([&] { streamed = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":50,"stream":true})"); });
  ASSERT_TRUE(wait_until([&] { return metric_value(cluster.metrics(), "tandem_requests_active") >= 1; }));
  ::kill(cluster.frontend().pid(), SIGTERM);
  HttpResponse health;
  EXPECT_TRUE(wait_until([&] {
    health = http(cluster.http_port(), "GET", "/health");
    return health.status != 200;
  }));
  EXPECT_EQ(health.status, 503);
  EXPECT_NE(health.body.find("draining"), std::string::npos) << health.body;
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1],"max_tokens":1})").status, 503);
  client.join();
  auto events = sse_events(streamed.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  for (const auto& e : events) EXPECT_EQ(e.find("\"error\""), std::string::npos) << e;
  EXPECT_TRUE(wait_until([&] { return !cluster.frontend().running(); }, 2s)) << "the frontend did not exit once drained";
}

// `tandem serve` with the fake engine on the demo model: serves, prints the curl line, restarts a
// killed worker, and stops every process on SIGTERM.
TEST(Serve, ServesRestartsAKilledWorkerAndStopsEverythingOnSigterm) {
  TANDEM_SKIP_OR_FAIL_IF_MISSING(!std::filesystem::exists(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3/tokenizer.json"),
                                 "the Qwen3 tokenizer in " << TANDEM_DATA_DIR << "/tokenizers (scripts/fetch_data.sh)");
  char dir_template[] = "/tmp/tandem-serve-test-XXXXXX";
  std::string dir = mkdtemp(dir_template);
  const int port = free_port();
  ASSERT_GT(port, 0);
  Process serve({TANDEM_BINARY, "serve", "--port", std::to_string(port), "--engine", "fake", "--cache-dir", dir,
                 "--child-log-level", "warn"},
                dir + "/serve.log");
  auto read_log = [&] {
    std::ifstream in(dir + "/serve.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  ASSERT_TRUE(wait_until([&] { return http(port, "GET", "/health").status == 200 && read_log().find("curl ") != std::string::npos; }, 60s))
      << read_log();
  EXPECT_NE(read_log().find("http://127.0.0.1:" + std::to_string(port)), std::string::npos);
  HttpResponse chat = http(port, "POST", "/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hello!"}],"max_tokens":5})",
                           {{"Content-Type", "application/json"}});
  EXPECT_EQ(chat.status, 200) << chat.body;
  // The decode worker's pid, from the frontend's worker info.
  auto decode_pid = [&]() -> int {
    std::istringstream in(http(port, "GET", "/metrics").body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("tandem_worker_info{", 0) != 0 || line.find("role=\"decode\"") == std::string::npos) continue;
      size_t p = line.find("pid=\"");
      return std::atoi(line.c_str() + p + 5);
    }
    return 0;
  };
  ASSERT_TRUE(wait_until([&] { return decode_pid() > 0; }, 10s));
  int first = decode_pid();
  ::kill(first, SIGKILL);
  ASSERT_TRUE(wait_until([&] { int pid = decode_pid(); return pid > 0 && pid != first; }, 20s)) << read_log();
  int second = decode_pid();
  EXPECT_EQ(http(port, "POST", "/v1/completions", R"({"prompt":"Hi","max_tokens":3})", {{"Content-Type", "application/json"}}).status, 200);
  serve.terminate();
  EXPECT_FALSE(serve.running());
  EXPECT_NE(::kill(second, 0), 0) << "the restarted worker outlived serve";
  EXPECT_NE(http(port, "GET", "/health").status, 200);
  std::filesystem::remove_all(dir);
}

// Random presets carry no tokenizer files: `serve` gives the frontend (which tokenizes) and the workers
// (which detokenize) the real tokenizer of the preset's vocabulary, or the one --tokenizer names, so
// text prompts work (the disaggregation study serves random:llama-3.1-8b this way); a folder without
// tokenizer.json is refused by name before anything starts.
TEST(Serve, RandomPresetsServeTextWithTheirVocabularysTokenizer) {
  const std::string tokenizer = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
  TANDEM_SKIP_OR_FAIL_IF_MISSING(!std::filesystem::exists(tokenizer + "/tokenizer.json"),
                                 "the Qwen3 tokenizer in " << tokenizer << " (scripts/fetch_data.sh)");
  char dir_template[] = "/tmp/tandem-serve-tok-XXXXXX";
  std::string dir = mkdtemp(dir_template);
  const int port = free_port();
  ASSERT_GT(port, 0);
  Process refused({TANDEM_BINARY, "serve", "--model", "random:tiny-qwen3", "--engine", "fake", "--port", std::to_string(port),
                   "--tokenizer", dir},
                  dir + "/refused.log");
  ASSERT_TRUE(wait_until([&] { return !refused.running(); }, 10s)) << "serve with a bad --tokenizer kept running";
  EXPECT_NE(refused.exit_code(), 0);
  std::ifstream refused_log(dir + "/refused.log");
  std::string refused_text((std::istreambuf_iterator<char>(refused_log)), {});
  EXPECT_NE(refused_text.find("--tokenizer: no tokenizer.json in '" + dir + "'"), std::string::npos) << refused_text;

  for (bool explicit_flag : {true, false}) {
    std::vector<std::string> argv = {TANDEM_BINARY, "serve", "--model", "random:tiny-qwen3", "--engine", "fake", "--port",
                                     std::to_string(port), "--num-prefill-workers", "0", "--child-log-level", "warn"};
    if (explicit_flag) argv.insert(argv.end(), {"--tokenizer", tokenizer});
    Process serve(argv, dir + "/serve.log");
    wait_until([&] { return metric_value(http(port, "GET", "/metrics").body, "tandem_workers") >= 1; }, 60s, 50ms);
    HttpResponse r = http(port, "POST", "/v1/completions", R"({"prompt":"Hello there","max_tokens":3})", {{"Content-Type", "application/json"}});
    ASSERT_EQ(r.status, 200) << "--tokenizer given: " << explicit_flag << "\n" << r.body;
    auto body = nlohmann::json::parse(r.body);
    EXPECT_EQ(body["usage"]["prompt_tokens"], 2) << r.body;  // "Hello there" is two Qwen3 tokens
    // The workers detokenize with the same tokenizer: the fake engine's tokens come back as text.
    EXPECT_FALSE(body["choices"][0]["text"].get<std::string>().empty()) << r.body;
    serve.terminate();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::testing
