// The cluster key end to end (issue 20): `tandem serve --cluster-key-file` serves through every plane
// (registration, requests, a remote prefill's KV push over TCP); a worker with another key, or none,
// cannot register while the frontend keeps serving; a peer without the key on a worker's request or
// KV transfer port is dropped, logged, never answered, and the worker keeps serving; a key file that is
// missing or empty, and a non-loopback address without a key, are CLI errors naming the flag. During a
// key rotation (key files of several lines), processes a step apart serve together on every plane and
// a process with neither key is refused.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "harness.h"
#include "testing/dependencies.h"

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

const char* kCompletion = R"({"prompt":[1,2,3],"max_tokens":4})";

class ClusterKey : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tandem-cluster-key-XXXXXX";
    dir_ = mkdtemp(tmpl);
    key_ = write("cluster.key", shell("openssl rand -hex 32") + "\n");
    other_key_ = write("other.key", shell("openssl rand -hex 32") + "\n");
    ASSERT_EQ(read_file(key_).size(), 65u) << "openssl rand failed";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& contents) {
    std::ofstream(dir_ + "/" + name) << contents;
    return dir_ + "/" + name;
  }
  std::string dir_, key_, other_key_;
};

TEST_F(ClusterKey, ServeWithAKeyServesThroughEveryPlane) {
  // A prompt over --max-local-prefill goes to the prefill worker, whose KV reaches the decode worker
  // over the TCP transfer port: all three planes carry the request.
  ServeProcess serve("cluster-key-serve", {"--engine", "fake", "--model", "random:tiny-qwen3", "--threads", "1",
                                           "--max-local-prefill", "8", "--kv-transfer", "tcp", "--cluster-key-file", key_});
  const int port = serve.port();
  ASSERT_TRUE(eventually([&] { return http(port, "GET", "/health", "", {}, 1000).status == 200; }, 90000, 50)) << serve.log();
  ASSERT_TRUE(eventually([&] { return metric_value(http(port, "GET", "/metrics").body, "tandem_workers") == 2; }, 90000, 50))
      << serve.log();
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += (i ? "," : "") + std::to_string(1000 + i);
  HttpResponse r = http(port, "POST", "/v1/completions", R"({"prompt":[)" + prompt + R"(],"max_tokens":4})",
                        {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 200) << r.body;
  const std::string metrics = http(port, "GET", "/metrics").body;
  EXPECT_EQ(metric_value(metrics, "tandem_remote_prefills_total"), 1) << serve.log();
  EXPECT_EQ(metric_value(metrics, "tandem_remote_prefill_fallbacks_total"), 0);
  serve.terminate();
  const std::string log = serve.log();
  EXPECT_EQ(count_of(log, "event=cluster_key_loaded"), 3u) << log;  // the frontend and both workers
  EXPECT_EQ(count_of(log, "event=cluster_auth_failed"), 0u) << log;
  EXPECT_EQ(count_of(log, "event=cluster_unauthenticated"), 0u) << log;
}

TEST_F(ClusterKey, WorkerWithoutTheKeyCannotRegisterAndTheFrontendKeepsServing) {
  Cluster cluster({"--cluster-key-file", key_});
  ASSERT_NE(cluster.http_port(), 0);
  const int good = cluster.add_worker("both", {"--engine", "fake", "--cluster-key-file", key_});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const int wrong = cluster.add_worker("both", {"--engine", "fake", "--cluster-key-file", other_key_});
  const int keyless = cluster.add_worker("both", {"--engine", "fake"});
  // Both keep trying; each attempt is refused and logged on the frontend's registry port (at most a
  // line a second), and the worker with the other key logs that the frontend does not hold its key.
  EXPECT_TRUE(eventually([&] { return count_of(cluster.log("frontend"), "event=cluster_auth_failed plane=registry") >= 2; },
                         30000, 50))
      << cluster.log("frontend");
  EXPECT_TRUE(eventually([&] { return cluster.log("both-1").find("does not hold this cluster key") != std::string::npos; },
                         30000, 50))
      << cluster.log("both-1");
  EXPECT_EQ(cluster.metric("tandem_workers"), 1) << cluster.metrics();
  EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);
  EXPECT_NE(cluster.log("both-1").find("event=cluster_auth_failed plane=registry"), std::string::npos) << cluster.log("both-1");
  EXPECT_NE(cluster.log("both-1").find("does not hold this cluster key"), std::string::npos);
  EXPECT_EQ(cluster.log("frontend").find("worker_id=both-1"), std::string::npos);
  EXPECT_EQ(cluster.log("frontend").find("worker_id=both-2"), std::string::npos);
  EXPECT_TRUE(cluster.worker(good).running());
  EXPECT_TRUE(cluster.worker(wrong).running());
  EXPECT_TRUE(cluster.worker(keyless).running());
}

TEST_F(ClusterKey, KeylessPeerOnAWorkersPortsIsDroppedUnanswered) {
  Cluster cluster({"--cluster-key-file", key_});
  const int rpc_port = free_port();
  const int transfer_port = free_port();
  cluster.add_worker("decode", {"--engine", "fake", "--kv-transfer", "tcp", "--cluster-key-file", key_, "--rpc-port",
                                std::to_string(rpc_port), "--transfer-port", std::to_string(transfer_port)});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  // A request-plane frame (a length prefix and junk) and a KV push header ("TKV1"), without a handshake.
  const std::string rpc_frame = std::string("\0\0\0\x08", 4) + "12345678";
  const std::string kv_frame = std::string("TKV1\0\0\0\x01\0\0\0\x01", 12) + std::string(8, '\0') + "x";
  EXPECT_EQ(raw_peer_gets(rpc_port, rpc_frame), "");
  EXPECT_EQ(raw_peer_gets(transfer_port, kv_frame), "");
  EXPECT_TRUE(eventually([&] {
    const std::string log = cluster.log("decode-0");
    return log.find("event=cluster_auth_failed plane=request") != std::string::npos &&
           log.find("event=cluster_auth_failed plane=kv_transfer") != std::string::npos;
  }, 10000, 50)) << cluster.log("decode-0");
  EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);
  EXPECT_TRUE(cluster.worker(0).running());
}

// Cluster mode: the frontend dials the workers it finds in etcd, with the handshake; a worker with
// another key is listed in etcd, but the dial fails both ways and it gets no request.
TEST_F(ClusterKey, EtcdModeFrontendDialsOnlyWorkersWithTheKey) {
  TANDEM_SKIP_OR_FAIL_IF_MISSING(!EtcdServer::available(), "etcd (Debian packages etcd-server, etcd-client)");
  EtcdServer etcd;
  ASSERT_TRUE(etcd.ok()) << "etcd did not start";
  Cluster cluster({"--registry", etcd.url(), "--cluster-key-file", key_});
  cluster.set_worker_registry({"--registry", etcd.url()});
  cluster.add_worker("both", {"--engine", "fake", "--cluster-key-file", key_});
  cluster.add_worker("both", {"--engine", "fake", "--cluster-key-file", other_key_});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_TRUE(eventually([&] {
    const std::string log = cluster.log("frontend");
    return log.find("event=cluster_auth_failed plane=request") != std::string::npos &&
           log.find("side=dialer") != std::string::npos;
  }, 20000, 50)) << cluster.log("frontend");
  for (int i = 0; i < 4; ++i) EXPECT_EQ(cluster.post("/v1/completions", kCompletion).status, 200);
  EXPECT_EQ(cluster.metric("tandem_workers"), 1) << cluster.metrics();
  // The worker with the other key refused the frontend's dial on its request port.
  EXPECT_NE(cluster.log("both-1").find("event=cluster_auth_failed plane=request"), std::string::npos) << cluster.log("both-1");
}

// The three rolling steps of docs/security.md ("Rotating the cluster key"), old key O to new key N:
// {O} -> {O,N} -> {N,O} -> {N}. In each step, restarted and not yet restarted processes run together:
// here the frontend and the decode worker have restarted (the step's new file) and the prefill worker
// has not (the previous file). A long prompt's remote prefill crosses every plane both ways: the prefill
// worker registers with the frontend (old dialer, new acceptor), the decode worker asks the prefill
// worker (new dialer, old acceptor), the prefill worker pushes KV to the decode worker (old dialer, new
// acceptor). A worker holding neither key is refused throughout.
TEST_F(ClusterKey, RotationSteps_ProcessesAStepApartServeTogether_NeitherKeyIsRefused) {
  const std::string old_key = shell("openssl rand -hex 32");
  const std::string new_key = shell("openssl rand -hex 32");
  const std::vector<std::string> steps = {write("step0.key", old_key + "\n"),
                                          write("step1.key", old_key + "\n" + new_key + "\n"),
                                          write("step2.key", new_key + "\n" + old_key + "\n"),
                                          write("step3.key", new_key + "\n")};
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += (i ? "," : "") + std::to_string(2000 + i);
  for (size_t step = 1; step < steps.size(); ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    Cluster cluster({"--cluster-key-file", steps[step], "--max-local-prefill", "8"});
    cluster.add_worker("prefill", {"--engine", "fake", "--kv-transfer", "tcp", "--cluster-key-file", steps[step - 1]});
    cluster.add_worker("decode", {"--engine", "fake", "--kv-transfer", "tcp", "--cluster-key-file", steps[step]});
    const int outsider = cluster.add_worker("both", {"--engine", "fake", "--cluster-key-file", other_key_});
    ASSERT_TRUE(cluster.wait_for_workers(2)) << cluster.log("frontend") << cluster.log("prefill-0");
    HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + prompt + R"(],"max_tokens":4})");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1) << cluster.log("frontend");
    EXPECT_EQ(cluster.metric("tandem_remote_prefill_fallbacks_total"), 0)
        << cluster.log("decode-1") << cluster.log("prefill-0");
    EXPECT_TRUE(eventually([&] { return cluster.log("both-2").find("event=cluster_auth_failed plane=registry") != std::string::npos; },
                           20000, 50))
        << cluster.log("both-2");
    EXPECT_EQ(cluster.metric("tandem_workers"), 2) << cluster.metrics();
    EXPECT_TRUE(cluster.worker(outsider).running());
    // The workers a step apart refused nothing (the frontend did: the outsider's registrations).
    EXPECT_EQ(count_of(cluster.log("prefill-0") + cluster.log("decode-1"), "event=cluster_auth_failed"), 0u)
        << cluster.log("prefill-0") << cluster.log("decode-1");
  }
}

TEST_F(ClusterKey, MissingOrEmptyKeyFileIsACliErrorNamingTheFlag) {
  const std::string empty = write("empty.key", "\n");
  for (const std::string& file : {dir_ + "/absent.key", empty}) {
    for (const std::string& command :
         {"frontend --port 0 --cluster-key-file " + file, "worker --engine fake --frontend 127.0.0.1:1 --cluster-key-file " + file,
          "serve --engine fake --model random:tiny-qwen3 --port 0 --cluster-key-file " + file}) {
      int status = 0;
      const std::string out = shell(tandem_binary() + " " + command + " 2>&1", &status);
      EXPECT_NE(status, 0) << command;
      EXPECT_NE(out.find("--cluster-key-file " + file), std::string::npos) << command << ": " << out;
      EXPECT_NE(out.find(file == empty ? "empty" : "cannot read"), std::string::npos) << out;
    }
  }
}

TEST_F(ClusterKey, WithoutAKeyClusterPortsStayOnLoopbackUnlessInsecure) {
  int status = 0;
  std::string out = shell(tandem_binary() + " worker --engine fake --frontend 127.0.0.1:1 --host 0.0.0.0 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--host 0.0.0.0"), std::string::npos) << out;
  EXPECT_NE(out.find("--cluster-key-file"), std::string::npos) << out;
  out = shell(tandem_binary() + " frontend --port 0 --registry-host 0.0.0.0 2>&1", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--registry-host 0.0.0.0"), std::string::npos) << out;

  // With --insecure-cluster the frontend listens on every address, and says so in one line.
  Cluster insecure({"--registry-host", "0.0.0.0", "--insecure-cluster"});
  ASSERT_NE(insecure.http_port(), 0) << insecure.log("frontend");
  const std::string log = insecure.log("frontend");
  EXPECT_EQ(count_of(log, "event=cluster_unauthenticated"), 1u) << log;
  EXPECT_NE(log.find("listen=\"--registry-host 0.0.0.0\""), std::string::npos) << log;
  // Without a key and on loopback (the default): served as before, with the one warning.
  Cluster plain;
  plain.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(plain.wait_for_workers(1));
  EXPECT_EQ(plain.post("/v1/completions", kCompletion).status, 200);
  EXPECT_EQ(count_of(plain.log("frontend"), "event=cluster_unauthenticated listen=loopback"), 1u);
  EXPECT_EQ(count_of(plain.log("both-0"), "event=cluster_unauthenticated listen=loopback"), 1u);
}

}  // namespace
}  // namespace tandem::testing
