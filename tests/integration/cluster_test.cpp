// Cluster mode end to end (issue 11): a real etcd on loopback (temporary data directory, ephemeral
// ports), the real `tandem` frontend and workers registering in it with leases. etcd is read and
// written here with etcdctl, the reference client, never with our own etcd code. Tests skip (with
// the reason) where etcd is not installed, and fail in CI (testing/dependencies.h).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "harness.h"
#include "testing/dependencies.h"

namespace tandem::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;


int count_lines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A stream's outcome: tokens received, and whether it ended with an error event before [DONE].
struct StreamResult {
  int status = 0;
  int tokens = 0;
  bool error = false;
  bool done = false;
  std::string body;  // for failure messages
};

StreamResult stream(Cluster& cluster, int max_tokens, int timeout_ms = 60000) {
  HttpResponse r = cluster.post("/v1/completions",
                                R"({"prompt":[1,2,3],"max_tokens":)" + std::to_string(max_tokens) +
                                    R"(,"stream":true,"return_token_ids":true})",
                                timeout_ms);
  StreamResult out;
  out.status = r.status;
  out.body = r.body;
  for (const auto& e : sse_events(r.body)) {
    if (e == "[DONE]") {
      out.done = true;
      continue;
    }
    if (e.find("\"error\"") != std::string::npos) out.error = true;
    auto j = json::parse(e, nullptr, false);
    if (!j.is_discarded() && j.contains("choices") && !j["choices"].empty()) {
      out.tokens += static_cast<int>(j["choices"][0].value("token_ids", json::array()).size());
    }
  }
  return out;
}

class Etcd : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!EtcdServer::available(), "etcd and etcdctl (Debian packages etcd-server, etcd-client)");
    etcd_ = std::make_unique<EtcdServer>();
    ASSERT_TRUE(etcd_->ok()) << "etcd did not start";
  }
  std::vector<std::string> frontend_args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--registry", etcd_->url(), "--namespace", ns_};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  void use_etcd(Cluster& cluster, int lease_ttl_s) {
    cluster.set_worker_registry({"--registry", etcd_->url(), "--namespace", ns_, "--lease-ttl", std::to_string(lease_ttl_s)});
  }
  std::string key(const std::string& rest) const { return "/tandem/" + ns_ + "/" + rest; }
  bool has_key(const std::string& rest) { return etcd_->get_prefix(key(rest)).count(key(rest)) > 0; }

  std::unique_ptr<EtcdServer> etcd_;
  const std::string ns_ = "t1";
};

TEST_F(Etcd, WorkersRegisterUnderLeases_RecordsAndKvDescriptorsAreInEtcd_RemotePrefillWorks) {
  Cluster cluster(frontend_args({"--max-local-prefill", "16"}));
  use_etcd(cluster, 10);
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  auto kvs = etcd_->get_prefix("/tandem/");
  ASSERT_TRUE(kvs.count(key("workers/decode/decode-1"))) << cluster.log("decode-1");
  ASSERT_TRUE(kvs.count(key("workers/prefill/prefill-0")));
  json decode = json::parse(kvs[key("workers/decode/decode-1")], nullptr, false);
  ASSERT_TRUE(decode.is_object());
  EXPECT_EQ(decode.value("role", ""), "decode");
  EXPECT_EQ(decode.value("worker_id", ""), "decode-1");
  EXPECT_EQ(decode.value("rpc_address", "").rfind("127.0.0.1:", 0), 0u);
  EXPECT_GT(decode.value("num_kv_blocks", 0), 0);
  // Only a worker that receives KV publishes a transfer descriptor.
  ASSERT_TRUE(kvs.count(key("kv/decode-1")));
  EXPECT_FALSE(kvs.count(key("kv/prefill-0")));
  json kv = json::parse(kvs[key("kv/decode-1")], nullptr, false);
  EXPECT_EQ(kv.value("transfer_address", ""), decode.value("transfer_address", "-"));
  EXPECT_GT(kv.value("block_bytes", 0), 0);
  // The keys live under a lease (etcdctl shows its id with -w json).
  std::string lease = shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=" + etcd_->endpoint() +
                            " get -w json " + key("workers/decode/decode-1"));
  EXPECT_NE(lease.find("\"lease\":"), std::string::npos) << lease;

  HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, 1) + R"(],"max_tokens":4})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1);
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 0);
  // The prefill worker read the decode worker's descriptor from etcd (once).
  EXPECT_NE(cluster.log("prefill-0").find("event=kv_descriptor_read peer=decode-1"), std::string::npos);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST_F(Etcd, DecodeWorkerAddedWhileServing_ReceivesTrafficWithinASecond) {
  Cluster cluster(frontend_args());
  use_etcd(cluster, 10);
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  ASSERT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").status, 200);
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  // From its key's appearance in etcd (polled with etcdctl: this clock starts up to one poll late,
  // ~50 ms) to the frontend routing to it.
  ASSERT_TRUE(eventually([&] { return has_key("workers/decode/decode-1"); }, 60000));
  auto listed = Clock::now();
  ASSERT_TRUE(eventually([&] { return cluster.metric("tandem_workers", "role=\"decode\"") == 2; }, 5000));
  EXPECT_LT(ms_since(listed), 1000);
  std::vector<std::thread> clients;
  for (int i = 0; i < 4; ++i) clients.emplace_back([&] { EXPECT_EQ(stream(cluster, 20).tokens, 20); });
  bool got_traffic = eventually(
      [&] { return cluster.metric("tandem_worker_outstanding_requests", "worker=\"decode-1\"") > 0; }, 2000);
  for (auto& t : clients) t.join();
  EXPECT_TRUE(got_traffic);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST_F(Etcd, DecodeWorkerKilled_StreamsEndWithAnError_DroppedFromEtcdWhenItsLeaseExpires) {
  // Without migration (issue 22), which would continue these streams on the other worker
  // (tests/integration/migration_test.cpp): this test keeps the error path covered.
  Cluster cluster(frontend_args({"--migration-limit", "0"}));
  use_etcd(cluster, 2);
  int victim = cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::vector<std::thread> clients;
  std::atomic<int> errors{0}, complete{0};
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      StreamResult r = stream(cluster, 75);
      if (r.error && r.done) ++errors;
      if (!r.error && r.tokens == 75) ++complete;
    });
  }
  // Least outstanding requests first: the streams spread over both workers.
  ASSERT_TRUE(eventually([&] { return cluster.metric("tandem_worker_outstanding_requests") == 4; }, 3000));
  const int on_victim = static_cast<int>(cluster.metric("tandem_worker_outstanding_requests", "worker=\"decode-0\""));
  EXPECT_GE(on_victim, 1);
  EXPECT_LE(on_victim, 3);
  auto killed = Clock::now();
  cluster.worker(victim).kill_now();
  for (auto& t : clients) t.join();
  // A stream the victim took but had not yet answered (a loaded machine can leave one waiting for its
  // first step) is sent once to the other worker and completes; every other stream on it ends in an error.
  const int rerouted = static_cast<int>(cluster.metric("tandem_requests_rerouted_total"));
  EXPECT_LE(rerouted, on_victim);
  EXPECT_EQ(errors.load(), on_victim - rerouted);
  EXPECT_EQ(complete.load(), 4 - on_victim + rerouted);
  // Its key outlives it until the lease expires; new requests never go to it meanwhile.
  EXPECT_TRUE(has_key("workers/decode/decode-0"));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").status, 200);
  ASSERT_TRUE(eventually([&] { return !has_key("workers/decode/decode-0"); }, 8000));
  // The lease was last renewed at most TTL/3 before the kill, so it expires no sooner than 2/3 TTL after.
  EXPECT_GE(ms_since(killed), 1300);
  EXPECT_TRUE(eventually([&] { return cluster.metric("tandem_cluster_members", "role=\"decode\"") == 1; }, 2000));
  EXPECT_NE(cluster.log("frontend").find("event=worker_unlisted worker_id=decode-0"), std::string::npos);
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").status, 200);
}

TEST_F(Etcd, WorkerSigtermUnderLoad_RevokesAtOnce_TakesNothingNew_FinishesWhatItHolds) {
  Cluster cluster(frontend_args());
  use_etcd(cluster, 30);
  int leaving = cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  cluster.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::vector<std::thread> clients;
  std::atomic<int> complete{0};
  std::mutex failures_mu;
  std::vector<std::string> failures;
  auto one = [&] {
    StreamResult r = stream(cluster, 30);
    if (r.status == 200 && !r.error && r.tokens == 30 && r.done) {
      ++complete;
    } else {
      std::lock_guard<std::mutex> lock(failures_mu);
      failures.push_back("status=" + std::to_string(r.status) + " error=" + std::to_string(r.error) +
                         " tokens=" + std::to_string(r.tokens) + " done=" + std::to_string(r.done) + " body=" + r.body.substr(0, 300));
    }
  };
  for (int i = 0; i < 8; ++i) clients.emplace_back(one);
  ASSERT_TRUE(eventually([&] { return cluster.metric("tandem_worker_outstanding_requests", "worker=\"decode-0\"") > 0; }, 3000));
  auto sigterm = Clock::now();
  ::kill(cluster.worker(leaving).pid(), SIGTERM);
  // More load while it drains: all of it goes to the other worker.
  for (int i = 0; i < 8; ++i) clients.emplace_back(one);
  // Revoked, not expired: gone long before the 30 s TTL.
  ASSERT_TRUE(eventually([&] { return !has_key("workers/decode/decode-0"); }, 3000));
  EXPECT_LT(ms_since(sigterm), 3000);
  for (auto& t : clients) t.join();
  EXPECT_EQ(complete.load(), 16) << ::testing::PrintToString(failures);
  EXPECT_TRUE(eventually([&] { return !cluster.worker(leaving).running(); }, 10000));
  std::string log = cluster.log("decode-0");
  EXPECT_NE(log.find("event=etcd_lease_revoked"), std::string::npos) << log;
  EXPECT_NE(log.find("event=drained"), std::string::npos) << log;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST_F(Etcd, ThresholdChangedInEtcdOrThroughTheAdminEndpoint_ChangesTheNextDecision) {
  Cluster cluster(frontend_args());  // --max-local-prefill 1000 by default
  use_etcd(cluster, 10);
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::string body = R"({"prompt":[)" + random_prompt_ids(64, 2) + R"(],"max_tokens":2})";
  ASSERT_EQ(cluster.post("/v1/completions", body).status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "decision=\"local\""), 1);

  ASSERT_TRUE(etcd_->put(key("disagg/max_local_prefill"), "16"));
  ASSERT_TRUE(eventually([&] {
    auto j = json::parse(http(cluster.http_port(), "GET", "/v1/tandem/router").body, nullptr, false);
    return j.is_object() && j.value("max_local_prefill", 0) == 16;
  }, 3000));
  ASSERT_EQ(cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, 3) + R"(],"max_tokens":2})").status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "decision=\"remote\""), 1);
  EXPECT_NE(cluster.log("frontend").find("event=router_config source=etcd name=max_local_prefill old=1000 new=16"),
            std::string::npos);

  // The admin endpoint writes etcd (so every frontend follows); this frontend applies it at once.
  HttpResponse r = cluster.post("/v1/tandem/router", R"({"max_local_prefill":5000,"max_prefill_queue":7})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(etcd_->get_prefix(key("disagg/"))[key("disagg/max_local_prefill")], "5000");
  EXPECT_EQ(etcd_->get_prefix(key("disagg/"))[key("disagg/max_prefill_queue")], "7");
  ASSERT_EQ(cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, 4) + R"(],"max_tokens":2})").status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "decision=\"local\""), 2);
  EXPECT_EQ(cluster.metric("tandem_router_max_prefill_queue"), 7);
  // A value that is not a count is refused and logged; the threshold keeps its value.
  ASSERT_TRUE(etcd_->put(key("disagg/max_local_prefill"), "lots"));
  ASSERT_TRUE(eventually([&] { return cluster.log("frontend").find("event=router_config_ignored") != std::string::npos; }, 3000));
  EXPECT_EQ(cluster.metric("tandem_router_max_local_prefill"), 5000);
}

TEST_F(Etcd, EtcdDownFor20s_RequestsKeepFlowing_NoWorkerDropped_RegistrationResumes) {
  Cluster cluster(frontend_args());
  use_etcd(cluster, 3);
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  etcd_->stop();
  auto down = Clock::now();
  int ok = 0, total = 0;
  while (ms_since(down) < 20000) {
    ++total;
    if (cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})", 5000).status == 200) ++ok;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  EXPECT_EQ(ok, total);
  EXPECT_EQ(cluster.metric("tandem_workers", "role=\"decode\""), 1);
  ASSERT_TRUE(etcd_->start());
  // etcd renews every lease when it comes back (its TTL counts again from then), and the worker's
  // keep-alives resume: the worker stays listed, and is never unlisted on the frontend.
  ASSERT_TRUE(eventually([&] { return has_key("workers/decode/decode-0"); }, 5000));
  std::this_thread::sleep_for(std::chrono::milliseconds(4000));  // more than the TTL
  EXPECT_TRUE(has_key("workers/decode/decode-0"));
  EXPECT_EQ(cluster.log("frontend").find("event=worker_unlisted"), std::string::npos);
  // Membership flows again: a worker started now is found.
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").status, 200);
}

TEST_F(Etcd, TwoFrontendsShareTheWorkers_RouteFromWhatTheWorkersPublish) {
  Cluster a(frontend_args({"--max-local-prefill", "32", "--max-prefill-queue", "100000"}));
  Cluster b(frontend_args({"--max-local-prefill", "32", "--max-prefill-queue", "100000"}));
  use_etcd(a, 10);
  a.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});  // decode-0
  ASSERT_TRUE(a.wait_for_workers(1));
  ASSERT_TRUE(b.wait_for_workers(1));

  // Prefix: a prompt served through A is known to B from the worker's published summary.
  const std::string shared = random_prompt_ids(16, 7);  // one block of 16 tokens
  ASSERT_EQ(a.post("/v1/completions", R"({"prompt":[)" + shared + R"(],"max_tokens":2})").status, 200);
  ASSERT_TRUE(eventually([&] {
    if (b.post("/v1/completions", R"({"prompt":[)" + shared + R"(],"max_tokens":2})").status != 200) return false;
    return b.log("frontend").find("prompt_tokens=16 uncached_tokens=0") != std::string::npos;
  }, 3000)) << b.log("frontend");

  // Load: three long streams through A load decode-0; a worker added now is idle. B has routed
  // nothing, so only the load decode-0 reports can make B pick the new worker.
  std::vector<std::thread> streams;
  // 150 tokens at 20 ms a step: 3 s of load, room for a loaded machine to start the second worker.
  for (int i = 0; i < 3; ++i) streams.emplace_back([&] { EXPECT_EQ(stream(a, 150).tokens, 150); });
  ASSERT_TRUE(eventually([&] { return a.metric("tandem_worker_outstanding_requests", "worker=\"decode-0\"") == 3; }, 3000));
  a.add_worker("decode", {"--engine", "fake", "--fake-step-ms", "20"});  // decode-1
  ASSERT_TRUE(b.wait_for_workers(2));
  ASSERT_TRUE(a.wait_for_workers(2));
  // B knows decode-0's load only from its heartbeats.
  ASSERT_TRUE(eventually([&] { return b.metric("vllm:num_requests_running", "worker=\"decode-0\"") >= 1; }, 3000))
      << "B never saw decode-0's load";
  ASSERT_EQ(b.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":2})").status, 200);
  EXPECT_NE(b.log("frontend").find("prompt_tokens=3 uncached_tokens=3 decode_worker=decode-1"), std::string::npos)
      << b.log("frontend");
  for (auto& t : streams) t.join();

  // Two prefill workers, 200 concurrent requests through both frontends: long prompts remote, short
  // ones local (the thresholds), every request completes, both prefill workers take work.
  a.add_worker("prefill", {"--engine", "fake", "--fake-prefill-us-per-token", "200"});  // prefill-2
  a.add_worker("prefill", {"--engine", "fake", "--fake-prefill-us-per-token", "200"});  // prefill-3
  ASSERT_TRUE(a.wait_for_workers(4));
  ASSERT_TRUE(b.wait_for_workers(4));
  std::atomic<int> complete{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 200; ++i) {
    clients.emplace_back([&, i] {
      Cluster& via = i % 2 ? a : b;
      const int len = i % 4 < 2 ? 64 : 8;  // 100 long (remote), 100 short (local)
      HttpResponse r = via.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(len, 100 + i) + R"(],"max_tokens":4})");
      if (r.status == 200) ++complete;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(complete.load(), 200);
  auto decisions = [&](const std::string& filter) {
    return a.metric("tandem_router_decisions_total", filter) + b.metric("tandem_router_decisions_total", filter);
  };
  // Earlier in this test: 2 prefix requests (+ retries) and 1 routed through B, and 3 streams, all local.
  EXPECT_EQ(decisions("decision=\"remote\""), 100);
  EXPECT_EQ(decisions("reason=\"long_prompt\""), 100);
  const int pushes2 = count_lines(a.log("prefill-2"), "event=kv_pushed");
  const int pushes3 = count_lines(a.log("prefill-3"), "event=kv_pushed");
  EXPECT_EQ(pushes2 + pushes3, 100);
  EXPECT_GT(pushes2, 10);
  EXPECT_GT(pushes3, 10);
  EXPECT_TRUE(a.wait_no_leaked_blocks());
  EXPECT_TRUE(b.wait_no_leaked_blocks());
}

// The NATS prefill queue, with the embedded registry (the queue does not need etcd).
class Nats : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!NatsServer::available(), "nats-server (Debian package nats-server)");
    nats_ = std::make_unique<NatsServer>();
    ASSERT_TRUE(nats_->ok()) << "nats-server did not start";
  }
  std::vector<std::string> queue_args(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--prefill-queue", nats_->url()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  std::string long_prompt(int seed) { return R"({"prompt":[)" + random_prompt_ids(64, seed) + R"(],"max_tokens":4})"; }

  std::unique_ptr<NatsServer> nats_;
  const std::string stream_ = "tandem_default_prefill";
};

TEST_F(Nats, RemotePrefillsGoThroughTheQueue_AndSpreadOverThePrefillWorkers) {
  Cluster cluster(queue_args({"--max-local-prefill", "16", "--max-prefill-queue", "100000"}));
  cluster.add_worker("prefill", queue_args({"--engine", "fake", "--fake-prefill-us-per-token", "300"}));
  cluster.add_worker("prefill", queue_args({"--engine", "fake", "--fake-prefill-us-per-token", "300"}));
  cluster.add_worker("decode", queue_args({"--engine", "fake"}));
  ASSERT_TRUE(cluster.wait_for_workers(3));
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 40; ++i) {
    clients.emplace_back([&, i] {
      if (cluster.post("/v1/completions", long_prompt(i)).status == 200) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 40);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 40);
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 0);
  const int pulled0 = count_lines(cluster.log("prefill-0"), "event=prefill_pulled");
  const int pulled1 = count_lines(cluster.log("prefill-1"), "event=prefill_pulled");
  EXPECT_EQ(pulled0 + pulled1, 40);
  EXPECT_GT(pulled0, 0);
  EXPECT_GT(pulled1, 0);
  // Work-queue retention: every message was acknowledged and is gone (read from the server itself).
  EXPECT_TRUE(eventually([&] { return nats_->stream_messages(stream_) == 0; }, 3000)) << nats_->stream_messages(stream_);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST_F(Nats, QueueDepthReadFromTheStream_FeedsMaxPrefillQueue) {
  Cluster cluster(queue_args({"--max-local-prefill", "16", "--max-prefill-queue", "2"}));
  // One slow prefill worker that holds one prefill at a time: the queue backs up.
  cluster.add_worker("prefill", queue_args({"--engine", "fake", "--fake-prefill-us-per-token", "15000",
                                            "--max-pulled-prefills", "1"}));
  cluster.add_worker("decode", queue_args({"--engine", "fake"}));
  ASSERT_TRUE(cluster.wait_for_workers(2));
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  // Two remote prefills: one held by the worker (delivered, not acknowledged), one waiting.
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      if (cluster.post("/v1/completions", long_prompt(i)).status == 200) ++ok;
    });
  }
  // The server's own count and the frontend's reading of it agree that two are queued.
  EXPECT_TRUE(eventually([&] { return nats_->stream_messages(stream_) == 2; }, 3000)) << nats_->stream_messages(stream_);
  EXPECT_TRUE(eventually([&] { return cluster.metric("tandem_prefill_queue_depth") == 2; }, 3000));
  // The queue holds max-prefill-queue prefills: the next long prompt is prefilled locally.
  ASSERT_EQ(cluster.post("/v1/completions", long_prompt(99)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "reason=\"prefill_queue_full\""), 1);
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 2);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 2);
}

TEST_F(Nats, PrefillWorkerKilledHoldingAMessage_AnotherGetsItAfterTheAckDeadline) {
  Cluster cluster(queue_args({"--max-local-prefill", "16"}));
  // The first pull subscriber creates the consumer, with its ack deadline of 1.5 s.
  int victim = cluster.add_worker("prefill", queue_args({"--engine", "fake", "--fake-prefill-us-per-token", "200000",
                                                         "--prefill-queue-ack-wait-ms", "1500"}));
  cluster.add_worker("decode", queue_args({"--engine", "fake"}));
  ASSERT_TRUE(cluster.wait_for_workers(2));
  HttpResponse response;
  std::thread client([&] { response = cluster.post("/v1/completions", long_prompt(5)); });
  ASSERT_TRUE(eventually([&] { return cluster.log("prefill-0").find("event=prefill_pulled") != std::string::npos; }, 5000));
  cluster.add_worker("prefill", queue_args({"--engine", "fake"}));  // prefill-2
  ASSERT_TRUE(cluster.wait_for_workers(3));
  cluster.worker(victim).kill_now();
  client.join();
  ASSERT_EQ(response.status, 200) << response.body;
  // Redelivered and prefilled remotely by the other worker; the decode worker never had to fall back.
  EXPECT_NE(cluster.log("prefill-2").find("delivered=2"), std::string::npos) << cluster.log("prefill-2");
  EXPECT_EQ(count_lines(cluster.log("prefill-2"), "event=kv_pushed"), 1);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1);
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST_F(Nats, NatsStopped_RemotePrefillsFallBackToLocal_ResumeWhenItReturns) {
  // No queue limit: after NATS returns, the stream can still hold a message of a request that fell back
  // while it was down (the prefill worker acks it once it pulls it); with the default limit of 2 that
  // stale message plus one in flight made the router's "next one goes remote too" a race (seen under load).
  Cluster cluster(queue_args({"--max-local-prefill", "16", "--max-prefill-queue", "100"}));
  cluster.add_worker("prefill", queue_args({"--engine", "fake"}));
  cluster.add_worker("decode", queue_args({"--engine", "fake"}));
  ASSERT_TRUE(cluster.wait_for_workers(2));
  ASSERT_EQ(cluster.post("/v1/completions", long_prompt(1)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1);

  nats_->stop();
  ASSERT_TRUE(eventually([&] { return cluster.log("frontend").find("event=prefill_queue_unavailable") != std::string::npos; }, 5000));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cluster.post("/v1/completions", long_prompt(10 + i)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_router_decisions_total", "reason=\"prefill_queue_unavailable\""), 3);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1);

  ASSERT_TRUE(nats_->start());
  ASSERT_TRUE(eventually([&] { return cluster.log("frontend").find("event=prefill_queue_reachable") != std::string::npos; }, 10000));
  int seed = 20;  // a new prompt each try: a repeated one would be in the prefix cache (short_prompt)
  ASSERT_TRUE(eventually([&] {
    return cluster.post("/v1/completions", long_prompt(seed++)).status == 200 &&
           cluster.metric("tandem_remote_prefills_total") >= 2;
  }, 10000));
  // The frontend may see NATS again before the decode worker's client has reconnected: requests in
  // that window fall back to a local prefill (and still succeed). Once one went remote, the next do too.
  const double fallbacks = cluster.metric("tandem_remote_prefill_fallbacks_total");
  const double remote = cluster.metric("tandem_remote_prefills_total");
  ASSERT_EQ(cluster.post("/v1/completions", long_prompt(seed++)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), remote + 1);
  EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), fallbacks);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(AdminEndpoint, WithAToken_ChangesNeedIt) {
  Cluster cluster({"--admin-token", "s3cret"});
  EXPECT_EQ(http(cluster.http_port(), "GET", "/v1/tandem/router").status, 200);
  HttpResponse refused = cluster.post("/v1/tandem/router", R"({"max_local_prefill":5})");
  EXPECT_EQ(refused.status, 401) << refused.body;
  HttpResponse wrong = http(cluster.http_port(), "POST", "/v1/tandem/router", R"({"max_local_prefill":5})",
                            {{"Authorization", "Bearer nope"}});
  EXPECT_EQ(wrong.status, 401);
  HttpResponse ok = http(cluster.http_port(), "POST", "/v1/tandem/router", R"({"max_local_prefill":5})",
                         {{"Authorization", "Bearer s3cret"}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(json::parse(ok.body).value("max_local_prefill", 0), 5);
  EXPECT_NE(cluster.log("frontend").find("event=router_config source=admin name=max_local_prefill old=1000 new=5"),
            std::string::npos);
}

}  // namespace
}  // namespace tandem::testing
