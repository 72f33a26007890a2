// Admission and limits end to end (issue 20): the real `tandem` frontend on loopback with fake-engine
// workers. API keys (401 without or with a wrong key, any of several keys passes, /health and /metrics
// open), --max-pending-requests (429 + Retry-After, counted in /metrics), the body and header size
// limits (413, 431), the header timeout against slowloris connections, --max-connections (503), and
// --request-timeout-s (the stream ends with an error event and every worker's KV blocks return).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* kCompletion = R"({"prompt":[1,2,3],"max_tokens":4})";

HttpResponse post_with_key(int port, const std::string& body, const std::string& key, int timeout_ms = 10000) {
  std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"}};
  if (!key.empty()) headers.emplace_back("Authorization", "Bearer " + key);
  return http(port, "POST", "/v1/completions", body, headers, timeout_ms);
}

// A raw client connection, for what the harness's whole-request http() cannot do.
class RawConnection {
 public:
  explicit RawConnection(int port) : fd_(connect_loopback(port)) {}
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // False once the server has closed the connection (or on any error).
  bool send(const std::string& data) {
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }
  // What the server sends until it closes the connection or `timeout_ms` passes; `closed` tells which.
  std::string read_until_closed(int timeout_ms, bool* closed) {
    std::string out;
    *closed = false;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) {
        *closed = true;
        break;
      }
      out.append(buffer, static_cast<size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
};

TEST(AdmissionServing, ApiKeys_EveryV1RouteNeedsOneOfTheKeys_HealthAndMetricsStayOpen) {
  Cluster cluster({"--api-key", "key-one", "--api-key", "key-two"});
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const int port = cluster.http_port();

  HttpResponse missing = post_with_key(port, kCompletion, "");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(missing.headers["www-authenticate"], "Bearer");
  auto body = json::parse(missing.body, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << missing.body;
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], 401);
  EXPECT_NE(body["error"]["message"].get<std::string>().find("Missing bearer token"), std::string::npos);

  HttpResponse wrong = post_with_key(port, kCompletion, "key-three");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_EQ(json::parse(wrong.body)["error"]["message"], "Invalid API key");
  EXPECT_EQ(http(port, "GET", "/v1/models").status, 401);
  EXPECT_EQ(http(port, "GET", "/v1/tandem/router").status, 401);

  for (const char* key : {"key-one", "key-two"}) {
    HttpResponse ok = post_with_key(port, kCompletion, key);
    EXPECT_EQ(ok.status, 200) << key << ": " << ok.body;
    EXPECT_EQ(http(port, "GET", "/v1/models", "", {{"Authorization", std::string("Bearer ") + key}}).status, 200);
  }
  EXPECT_EQ(http(port, "GET", "/health").status, 200);
  EXPECT_EQ(http(port, "GET", "/metrics").status, 200);
  EXPECT_EQ(cluster.metric("tandem_http_errors_total", "status=\"401\""), 4);
  // The keys appear in no log line.
  EXPECT_EQ(cluster.log("frontend").find("key-one"), std::string::npos);
  EXPECT_NE(cluster.log("frontend").find("event=api_keys_required count=2"), std::string::npos);
}

TEST(AdmissionServing, ApiKeys_FromTheEnvironment) {
  ::setenv("TANDEM_API_KEY", "env-a, env-b", 1);
  Cluster cluster;
  ::unsetenv("TANDEM_API_KEY");
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(post_with_key(cluster.http_port(), kCompletion, "").status, 401);
  EXPECT_EQ(post_with_key(cluster.http_port(), kCompletion, "env-a").status, 200);
  EXPECT_EQ(post_with_key(cluster.http_port(), kCompletion, "env-b").status, 200);
}

TEST(AdmissionServing, MaxPendingRequests_BeyondTheLimitIs429WithRetryAfter) {
  Cluster cluster({"--max-pending-requests", "2"});
  cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  std::atomic<int> completed{0};
  std::vector<std::thread> streams;
  for (int i = 0; i < 2; ++i) {
    streams.emplace_back([&] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":60,"stream":true})", 20000);
      auto events = sse_events(r.body);
      if (r.status == 200 && !events.empty() && events.back() == "[DONE]") ++completed;
    });
  }
  ASSERT_TRUE(eventually([&] { return cluster.metric("tandem_requests_active") == 2; }));
  const auto start = Clock::now();
  HttpResponse refused = cluster.post("/v1/completions", kCompletion);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(500));  // at once, not queued
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.headers["retry-after"], "1");
  auto body = json::parse(refused.body, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << refused.body;
  EXPECT_EQ(body["error"]["code"], 429);
  EXPECT_EQ(body["error"]["type"], "rate_limit_exceeded");
  EXPECT_EQ(cluster.metric("tandem_requests_rejected_total", "reason=\"max_pending\""), 1);
  for (auto& t : streams) t.join();
  EXPECT_EQ(completed.load(), 2);
  EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);  // room again
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(AdmissionServing, BodyAndHeaderSizeLimits_413And431) {
  Cluster cluster({"--max-body-bytes", "1000", "--max-header-bytes", "2048"});
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const std::string big = R"({"prompt":")" + std::string(2000, 'a') + R"(","max_tokens":1})";
  HttpResponse too_large = cluster.post("/v1/completions", big);
  EXPECT_EQ(too_large.status, 413);
  EXPECT_NE(too_large.body.find("1000 bytes"), std::string::npos) << too_large.body;
  HttpResponse headers = http(cluster.http_port(), "GET", "/health", "", {{"X-Filler", std::string(4000, 'b')}});
  EXPECT_EQ(headers.status, 431);
  EXPECT_EQ(json::parse(headers.body, nullptr, false)["error"]["code"], 431);
  EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);
  EXPECT_EQ(cluster.metric("tandem_http_connections_closed_total", "reason=\"body_too_large\""), 1);
  EXPECT_EQ(cluster.metric("tandem_http_connections_closed_total", "reason=\"header_too_large\""), 1);
}

// A slowloris client (a header a byte at a time, or nothing at all) is closed by the header timeout,
// while ordinary requests keep being served.
TEST(AdmissionServing, SlowlorisConnectionsAreClosedByTheHeaderTimeout) {
  Cluster cluster({"--http-header-timeout-s", "0.5"});
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const int port = cluster.http_port();
  const auto start = Clock::now();
  RawConnection silent(port);
  RawConnection trickle(port);
  ASSERT_TRUE(silent.ok() && trickle.ok());
  const std::string header = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(200, 'z') + "\r\n\r\n";
  size_t sent = 0;
  int served = 0;
  // A byte every 20 ms: the whole header would take 5 s.
  while (sent < header.size() && trickle.send(header.substr(sent, 1))) {
    ++sent;
    if (sent % 10 == 0 && cluster.post("/v1/completions", kCompletion).status == 200) ++served;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool closed = false;
  const std::string answer = trickle.read_until_closed(3000, &closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(sent, header.size()) << "the whole trickled header was accepted";
  EXPECT_EQ(answer, "");  // closed, not answered
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  EXPECT_GE(served, 1);
  silent.read_until_closed(3000, &closed);
  EXPECT_TRUE(closed) << "a connection that sends nothing stays open";
  EXPECT_GE(cluster.metric("tandem_http_connections_closed_total", "reason=\"header_timeout\""), 2);
  EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);
}

TEST(AdmissionServing, MaxConnections_ExtraConnectionsGet503AtOnce) {
  Cluster cluster({"--max-connections", "3", "--http-header-timeout-s", "30"});
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const int port = cluster.http_port();
  {
    std::vector<std::unique_ptr<RawConnection>> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(std::make_unique<RawConnection>(port));
      ASSERT_TRUE(held.back()->ok());
    }
    // The server counts a connection once its session starts: probe until the limit answers.
    HttpResponse refused;
    ASSERT_TRUE(eventually([&] {
      refused = http(port, "GET", "/health", "", {}, 2000);
      return refused.status == 503 && refused.headers.count("retry-after");
    })) << refused.status << " " << refused.body;
    EXPECT_NE(refused.body.find("too many open connections"), std::string::npos) << refused.body;
  }
  // The held connections are closed: requests are served again.
  ASSERT_TRUE(eventually([&] { return cluster.post("/v1/completions", kCompletion).status == 200; }));
  EXPECT_GE(cluster.metric("tandem_http_connections_closed_total", "reason=\"max_connections\""), 1);
}

// The request deadline ends a stream that is still producing: an error event, then [DONE], and the
// Abort reaches every worker that held blocks for it (here a decode worker waiting on a slow remote
// prefill, and the prefill worker running it).
TEST(AdmissionServing, RequestTimeout_EndsTheStreamAndFreesBlocksEverywhere) {
  Cluster cluster({"--request-timeout-s", "1", "--max-local-prefill", "100"});
  cluster.add_worker("prefill", {"--engine", "fake", "--fake-prefill-us-per-token", "2000"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "50"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  HttpResponse local, remote;
  Clock::time_point local_end, remote_end;
  const auto start = Clock::now();
  // Local prefill, then a long decode; and a remote prefill of 1000 tokens (2 s at the prefill worker, past the deadline).
  std::thread local_stream([&] {
    local = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":1000,"stream":true})", 15000);
    local_end = Clock::now();
  });
  std::thread remote_stream([&] {
    remote = cluster.post("/v1/completions",
                          R"({"prompt":[)" + random_prompt_ids(1000, 7) + R"(],"max_tokens":1000,"stream":true})", 15000);
    remote_end = Clock::now();
  });
  // While they run, the workers hold blocks for them.
  EXPECT_TRUE(eventually([&] { return cluster.metric("tandem_worker_kv_blocks_used") > 0; }, 3000));
  local_stream.join();
  remote_stream.join();
  for (const auto* r : {&local, &remote}) {
    EXPECT_EQ(r->status, 200);
    auto events = sse_events(r->body);
    ASSERT_GE(events.size(), 2u) << r->body;
    EXPECT_EQ(events.back(), "[DONE]");
    auto error = json::parse(events[events.size() - 2], nullptr, false);
    ASSERT_FALSE(error.is_discarded()) << events[events.size() - 2];
    EXPECT_EQ(error["error"]["code"], 504) << r->body.substr(0, 500);
    EXPECT_NE(error["error"]["message"].get<std::string>().find("deadline"), std::string::npos);
  }
  EXPECT_LT(local_end - start, std::chrono::milliseconds(3000));
  EXPECT_LT(remote_end - start, std::chrono::milliseconds(3000));
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "decision=\"remote\""), 1);
  // Without the Abort the decode worker would hold its blocks for 1000 steps of 50 ms.
  EXPECT_TRUE(cluster.wait_no_leaked_blocks(5000));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(8));
}

// `tandem serve` hands its keys to its frontend (through the environment), and the bench client sends
// $OPENAI_API_KEY as its bearer token: the two work together.
TEST(AdmissionServing, ServeWithKeys_BenchClientSendsOpenaiApiKey) {
  ServeProcess serve("admission", {"--engine", "fake", "--model", "random:tiny-qwen3", "--num-prefill-workers", "0", "--threads",
                                   "1", "--api-key", "sk-serve-1", "--api-key", "sk-serve-2"});
  const int port = serve.port();
  ASSERT_TRUE(eventually([&] { return http(port, "GET", "/health", "", {}, 1000).status == 200; }, 60000)) << serve.log();
  EXPECT_EQ(http(port, "GET", "/v1/models").status, 401);
  EXPECT_EQ(http(port, "GET", "/v1/models", "", {{"Authorization", "Bearer sk-serve-2"}}).status, 200);
  // The keys are on no process's command line but the supervisor's own ("[f]": grep's own line
  // does not match).
  EXPECT_NE(shell("ps -eo args | grep -c '[f]rontend --host 127.0.0.1 --port " + std::to_string(port) + "'"), "0");
  EXPECT_EQ(shell("ps -eo args | grep -c '[f]rontend --host.*sk-serve'"), "0");
  const std::string bench = tandem_binary() + " bench serve --port " + std::to_string(port) +
                            " --tokenizer builtin:words --random-input-len 16 --random-output-len 4 --num-prompts 8"
                            " --num-warmups 0 --progress none --no-server-metrics 2>&1";
  const std::string with_key = shell("OPENAI_API_KEY=sk-serve-1 " + bench);
  EXPECT_NE(with_key.find("Successful requests:                     8"), std::string::npos) << with_key;
  EXPECT_NE(with_key.find("Failed requests:                         0"), std::string::npos) << with_key;
  int status = 0;
  shell("OPENAI_API_KEY=wrong " + bench, &status);
  EXPECT_NE(status, 0);
  serve.terminate();
}

}  // namespace
}  // namespace tandem::testing
