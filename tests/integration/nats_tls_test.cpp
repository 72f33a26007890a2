// The NATS prefill queue over TLS with credentials (issue 20): a real nats-server started with a
// certificate made by the openssl CLI in the test, requiring a token (then a user and password, then
// client certificates). Frontend and workers reach it with tls://…?ca=… and remote prefills go through
// the queue; the credentials never appear in a log; bad settings are CLI errors naming the flag. A
// server that refuses the credentials or cannot be trusted fails the start of a frontend or worker
// with an error naming the flag (a worker used to hang in libnats, never registered); one that starts
// refusing them later is connected to again once it accepts them, with local prefills meanwhile.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "harness.h"
#include "start_refusal.h"
#include "testing/dependencies.h"

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

class NatsTls : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!NatsServer::available(), "nats-server (Debian package nats-server)");
    char tmpl[] = "/tmp/tandem-nats-tls-XXXXXX";
    dir_ = mkdtemp(tmpl);
    int status = 0;
    shell("cd " + dir_ + " && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext"
          " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=nats-test-ca -keyout ca.key -out ca.pem"
          " && openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr"
          " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem"
          " && openssl req -newkey rsa:2048 -nodes -subj /CN=tandem -keyout client.key -out client.csr"
          " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out client.pem"
          " 2>/dev/null",
          &status);
    ASSERT_EQ(status, 0) << "openssl could not make the test certificates";
    port_ = free_port();
  }
  void TearDown() override {
    server_.kill_now();
    fs::remove_all(dir_);
  }
  // nats-server with JetStream over TLS, plus `auth` (its authorization flags).
  void start_server(std::vector<std::string> auth) {
    fs::remove(dir_ + "/nats.log");  // the readiness check below counts its line
    std::vector<std::string> argv = {find_program("nats-server"), "-js", "-a", "127.0.0.1", "-p", std::to_string(port_),
                                     "-sd", dir_ + "/store", "--tls", "--tlscert", dir_ + "/server.pem", "--tlskey",
                                     dir_ + "/server.key"};
    argv.insert(argv.end(), auth.begin(), auth.end());
    server_ = Process(argv, dir_ + "/nats.log");
    ASSERT_TRUE(eventually([&] { return shell("grep -c 'Server is ready' " + dir_ + "/nats.log") == "1"; }, 10000, 100))
        << shell("cat " + dir_ + "/nats.log");
  }
  std::string url(const std::string& credentials, const std::string& query) const {
    return "tls://" + credentials + "127.0.0.1:" + std::to_string(port_) + query;
  }
  // A frontend and a prefill and a decode worker on `queue`; then `n` long prompts. Returns the
  // frontend's count of remote prefills.
  double remote_prefills(const std::string& queue, int n, std::string* logs) {
    Cluster cluster({"--prefill-queue", queue, "--max-local-prefill", "16", "--max-prefill-queue", "100000"});
    cluster.add_worker("prefill", {"--engine", "fake", "--prefill-queue", queue});
    cluster.add_worker("decode", {"--engine", "fake", "--prefill-queue", queue});
    if (!cluster.wait_for_workers(2)) return -1;
    for (int i = 0; i < n; ++i) {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, i) + R"(],"max_tokens":4})");
      EXPECT_EQ(r.status, 200) << r.body;
    }
    const double remote = cluster.metric("tandem_remote_prefills_total");
    *logs = cluster.log("frontend") + cluster.log("prefill-0") + cluster.log("decode-1");
    return remote;
  }
  std::string dir_;
  int port_ = 0;
  Process server_;
};

TEST_F(NatsTls, TokenOverTls) {
  start_server({"--auth", "s3cret-token"});
  std::string logs;
  EXPECT_EQ(remote_prefills(url("s3cret-token@", "?ca=" + dir_ + "/ca.pem"), 3, &logs), 3) << logs;
  EXPECT_EQ(logs.find("s3cret-token"), std::string::npos) << "a credential reached a log";
}

TEST_F(NatsTls, UserAndPasswordOverTls) {
  start_server({"--user", "tandem", "--pass", "pa55word"});
  std::string logs;
  EXPECT_EQ(remote_prefills(url("tandem:pa55word@", "?ca=" + dir_ + "/ca.pem"), 2, &logs), 2) << logs;
  EXPECT_EQ(logs.find("pa55word"), std::string::npos);
}

TEST_F(NatsTls, ClientCertificates) {
  start_server({"--tlsverify", "--tlscacert", dir_ + "/ca.pem"});
  std::string logs;
  const std::string files = "?ca=" + dir_ + "/ca.pem&cert=" + dir_ + "/client.pem&key=" + dir_ + "/client.key";
  EXPECT_EQ(remote_prefills(url("", files), 2, &logs), 2) << logs;
}

TEST_F(NatsTls, BadSettingsAreCliErrorsNamingTheFlag) {
  for (const auto& [query, expect] : std::vector<std::pair<std::string, std::string>>{
           {"?ca=" + dir_ + "/absent.pem", "ca=" + dir_ + "/absent.pem"},
           {"?cert=" + dir_ + "/client.pem", "cert= and key= go together"},
           {"?color=blue", "unknown or empty setting 'color=blue'"}}) {
    int status = 0;
    const std::string out = shell(tandem_binary() + " frontend --port 0 --prefill-queue '" + url("user:hunter2@", query) + "' 2>&1", &status);
    EXPECT_NE(status, 0) << query;
    EXPECT_NE(out.find("--prefill-queue"), std::string::npos) << out;
    EXPECT_NE(out.find(expect), std::string::npos) << out;
    EXPECT_EQ(out.find("hunter2"), std::string::npos) << out;
  }
}

TEST_F(NatsTls, RefusedCredentialsOrUntrustedServer_FailTheStartNamingTheFlag_NoHang) {
  start_server({"--user", "tandem", "--pass", "pa55word"});
  const std::string ca = "?ca=" + dir_ + "/ca.pem";
  for (const auto& [queue, expect] : std::vector<std::pair<std::string, std::string>>{
           {url("tandem:wrong-pw@", ca), "Authentication Violation"},
           {url("", ca), "Authentication Violation"},
           {url("tandem:pa55word@", ""), "SSL"}}) {  // no ca=: the server's certificate is not trusted
    for (const std::string& out : expect_start_refused("--prefill-queue '" + queue + "'",
                                                       {"--prefill-queue", "refused this client", expect},
                                                       "--frontend 127.0.0.1:1 ")) {
      EXPECT_EQ(out.find("wrong-pw"), std::string::npos) << out;
      EXPECT_EQ(out.find("pa55word"), std::string::npos) << out;
    }
  }
}

// NATS not up yet when the cluster starts: frontend and workers start, register and serve (prefilling
// locally); once the server is up, remote prefills go through it. The frontend and workers used to wait
// in libnats's connect until NATS came up (connect retries without a callback block).
TEST_F(NatsTls, NatsDownAtStart_EveryoneStartsAndServes_TheQueueIsUsedOnceItIsUp) {
  const std::string queue = url("tandem:pa55word@", "?ca=" + dir_ + "/ca.pem");
  Cluster cluster({"--prefill-queue", queue, "--max-local-prefill", "16", "--max-prefill-queue", "100000"});
  ASSERT_NE(cluster.http_port(), 0) << cluster.log("frontend");
  cluster.add_worker("prefill", {"--engine", "fake", "--prefill-queue", queue});
  cluster.add_worker("decode", {"--engine", "fake", "--prefill-queue", queue});
  ASSERT_TRUE(cluster.wait_for_workers(2)) << cluster.log("frontend") << cluster.log("decode-1");
  int seed = 0;
  auto long_prompt = [&] {
    return cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, seed++) + R"(],"max_tokens":4})");
  };
  EXPECT_EQ(long_prompt().status, 200);
  start_server({"--user", "tandem", "--pass", "pa55word"});
  EXPECT_TRUE(eventually([&] {
    EXPECT_EQ(long_prompt().status, 200);
    return count_of(cluster.log("prefill-0"), "event=prefill_pulled") > 0;
  }, 30000, 100)) << cluster.log("frontend") << cluster.log("decode-1") << cluster.log("prefill-0");
}

// The server's password changes under running processes: libnats closes their connections for good
// after two refusals; each process connects again on its own once the server takes its password back.
TEST_F(NatsTls, ServerThatRefusesLater_IsConnectedToAgainOnceItAcceptsTheCredentials) {
  start_server({"--user", "tandem", "--pass", "pa55word"});
  const std::string queue = url("tandem:pa55word@", "?ca=" + dir_ + "/ca.pem");
  Cluster cluster({"--prefill-queue", queue, "--max-local-prefill", "16", "--max-prefill-queue", "100000"});
  cluster.add_worker("prefill", {"--engine", "fake", "--prefill-queue", queue});
  cluster.add_worker("decode", {"--engine", "fake", "--prefill-queue", queue});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  auto long_prompt = [&](int seed) {
    return cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(64, seed) + R"(],"max_tokens":4})");
  };
  ASSERT_EQ(long_prompt(0).status, 200);
  ASSERT_EQ(cluster.metric("tandem_remote_prefills_total"), 1);

  server_.kill_now();
  start_server({"--user", "tandem", "--pass", "another-password"});
  // Requests keep being served (prefilled locally) while the server refuses; the processes that use
  // the queue on their own (the frontend reads its depth, the prefill worker pulls) say why.
  int seed = 1;
  EXPECT_TRUE(eventually([&] {
    EXPECT_EQ(long_prompt(seed++).status, 200);
    return cluster.log("frontend").find("event=prefill_queue_refused") != std::string::npos &&
           cluster.log("prefill-0").find("event=prefill_queue_refused") != std::string::npos;
  }, 30000, 100)) << cluster.log("frontend") << cluster.log("prefill-0");
  EXPECT_NE(cluster.log("prefill-0").find("refused this client: Authentication Violation"), std::string::npos)
      << cluster.log("prefill-0");
  const size_t pulled_before = count_of(cluster.log("prefill-0"), "event=prefill_pulled");

  server_.kill_now();
  start_server({"--user", "tandem", "--pass", "pa55word"});
  // Through the queue again: the decode worker publishes and the prefill worker pulls, each on a new
  // connection (libnats closed the old ones for good).
  EXPECT_TRUE(eventually([&] {
    EXPECT_EQ(long_prompt(seed++).status, 200);
    return count_of(cluster.log("prefill-0"), "event=prefill_pulled") > pulled_before;
  }, 30000, 100)) << cluster.log("frontend") << cluster.log("decode-1") << cluster.log("prefill-0");
  EXPECT_TRUE(eventually([&] {
    return cluster.log("prefill-0").find("event=prefill_queue_connected") != std::string::npos &&
           cluster.log("frontend").find("event=prefill_queue_connected") != std::string::npos;
  }, 10000, 100)) << cluster.log("frontend") << cluster.log("prefill-0");
  const std::string logs = cluster.log("frontend") + cluster.log("prefill-0") + cluster.log("decode-1");
  EXPECT_EQ(logs.find("pa55word"), std::string::npos);
}

}  // namespace
}  // namespace tandem::testing
