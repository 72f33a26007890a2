// Mutual TLS on the cluster planes end to end (issue 20), certificates made by the openssl CLI:
// `tandem serve --cluster-tls-* --tls-*` hands both sets to its children, serves over HTTPS, and a
// remote prefill's KV blocks cross the TLS transfer port to give the greedy tokens `tandem generate`
// gives; a worker whose certificate another CA signed, or one without TLS, cannot register while the
// frontend keeps serving; garbage on a worker's TLS request and KV ports is dropped unanswered and the
// worker keeps serving; the three flags go together, a CLI error names the missing one.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "harness.h"
#include "testing/test_certificates.h"

namespace tandem::testing {
namespace {

// Nothing, or one TLS alert record (content type 21): never a frame of the plane.
bool nothing_but_an_alert(const std::string& got) {
  return got.empty() || (got[0] == '\x15' && got.find("<not closed>") == std::string::npos && got.size() <= 7);
}

class ClusterTlsServing : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { certs_ = new TestCertificates(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(certs_->ok()) << "openssl could not make the test certificates"; }
  static std::string file(const std::string& name) { return certs_->file(name); }
  // The cluster flags with <name>.pem/.key and the cluster CA.
  static std::vector<std::string> tls_flags(const std::string& name) {
    return {"--cluster-tls-cert", file(name + ".pem"), "--cluster-tls-key", file(name + ".key"), "--cluster-tls-ca",
            file("ca.pem")};
  }
  static std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
  }
  static TestCertificates* certs_;
};
TestCertificates* ClusterTlsServing::certs_ = nullptr;

TEST_F(ClusterTlsServing, ServeHandsItsTlsFlagsOnAndARemotePrefillOverTlsDecodesAsGenerateDoes) {
  ServeProcess serve("cluster-tls", with({"--model", "random:tiny-qwen3", "--threads", "1", "--max-local-prefill", "16",
                                          "--kv-transfer", "tcp", "--tls-cert", file("server.pem"), "--tls-key", file("server.key")},
                                         tls_flags("member")));
  const std::string base = "curl -s --max-time 60 --cacert " + file("ca.pem") + " https://127.0.0.1:" + std::to_string(serve.port());
  ASSERT_TRUE(eventually([&] { return metric_value(shell(base + "/metrics"), "tandem_workers") == 2; }, 120000, 100))
      << serve.log();
  const std::string ids = random_prompt_ids(60, 5);  // over --max-local-prefill: prefilled remotely
  const std::string body = R"({"prompt":[)" + ids + R"(],"max_tokens":10,"temperature":0,"return_token_ids":true})";
  const std::string reply = shell(base + "/v1/completions -H 'Content-Type: application/json' -d '" + body + "'");
  auto j = nlohmann::json::parse(reply, nullptr, false);
  ASSERT_TRUE(!j.is_discarded() && j.contains("choices")) << reply << serve.log();
  std::string served;
  for (int id : j["choices"][0]["token_ids"].get<std::vector<int>>()) served += (served.empty() ? "" : ",") + std::to_string(id);
  const std::string generated = shell(tandem_binary() + " generate --model random:tiny-qwen3 --threads 1 --prompt-ids " +
                                      ids + " --max-tokens 10 2>/dev/null");
  EXPECT_NE(generated, "");
  EXPECT_EQ(served, generated);
  const std::string metrics = shell(base + "/metrics");
  EXPECT_EQ(metric_value(metrics, "tandem_remote_prefills_total"), 1) << serve.log();
  EXPECT_EQ(metric_value(metrics, "tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_GT(metric_value(metrics, "tandem_kv_transfer_bytes_total"), 0);
  serve.terminate();
  const std::string log = serve.log();
  EXPECT_EQ(count_of(log, "event=cluster_tls_loaded"), 3u) << log;  // the frontend and both workers
  EXPECT_EQ(count_of(log, "event=cluster_auth_failed"), 0u) << log;
  EXPECT_EQ(count_of(log, "event=cluster_unauthenticated"), 0u) << log;
}

TEST_F(ClusterTlsServing, WorkersWithoutAMembersCertificateCannotRegister) {
  Cluster cluster(tls_flags("member"));
  ASSERT_NE(cluster.http_port(), 0);
  cluster.add_worker("both", with({"--engine", "fake"}, tls_flags("member")));
  ASSERT_TRUE(cluster.wait_for_workers(1)) << cluster.log("frontend") << cluster.log("both-0");
  const int intruder = cluster.add_worker("both", with({"--engine", "fake"}, tls_flags("intruder")));
  const int plain = cluster.add_worker("both", {"--engine", "fake"});
  EXPECT_TRUE(eventually([&] { return count_of(cluster.log("frontend"), "event=cluster_auth_failed plane=registry") >= 2; },
                         30000, 100))
      << cluster.log("frontend");
  EXPECT_NE(cluster.log("frontend").find("TLS handshake"), std::string::npos) << cluster.log("frontend");
  EXPECT_EQ(cluster.metric("tandem_workers"), 1) << cluster.metrics();
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})").status, 200);
  EXPECT_EQ(cluster.log("frontend").find("worker_id=both-1"), std::string::npos);
  EXPECT_EQ(cluster.log("frontend").find("worker_id=both-2"), std::string::npos);
  EXPECT_TRUE(cluster.worker(intruder).running());
  EXPECT_TRUE(cluster.worker(plain).running());
}

TEST_F(ClusterTlsServing, GarbageOnAWorkersTlsPortsIsDroppedUnanswered) {
  Cluster cluster(tls_flags("member"));
  const int rpc_port = free_port();
  const int transfer_port = free_port();
  cluster.add_worker("decode", with({"--engine", "fake", "--kv-transfer", "tcp", "--rpc-port", std::to_string(rpc_port),
                                     "--transfer-port", std::to_string(transfer_port)},
                                    tls_flags("member")));
  ASSERT_TRUE(cluster.wait_for_workers(1));
  std::string garbage;
  for (int i = 0; i < 2048; ++i) garbage += static_cast<char>((i * 97 + 3) & 0xff);
  const std::string rpc_frame = std::string("\0\0\0\x08", 4) + "12345678";
  const std::string kv_frame = std::string("TKV1\0\0\0\x01\0\0\0\x01", 12) + std::string(8, '\0') + "x";
  for (int port : {rpc_port, transfer_port}) {
    for (const std::string& junk : {rpc_frame, kv_frame, garbage}) {
      const std::string got = raw_peer_gets(port, junk);
      EXPECT_TRUE(nothing_but_an_alert(got)) << port << ": " << got.size() << " bytes";
    }
  }
  EXPECT_TRUE(eventually([&] {
    const std::string log = cluster.log("decode-0");
    return log.find("event=cluster_auth_failed plane=request") != std::string::npos &&
           log.find("event=cluster_auth_failed plane=kv_transfer") != std::string::npos;
  }, 10000, 100)) << cluster.log("decode-0");
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})").status, 200);
  EXPECT_TRUE(cluster.worker(0).running());
}

TEST_F(ClusterTlsServing, TheThreeFlagsGoTogetherAndErrorsNameTheFlag) {
  const std::string member = " --cluster-tls-cert " + file("member.pem") + " --cluster-tls-key " + file("member.key");
  for (const std::string& command :
       {"frontend --port 0" + member, "worker --engine fake --frontend 127.0.0.1:1" + member,
        "serve --engine fake --model random:tiny-qwen3 --port 0" + member}) {
    int status = 0;
    const std::string out = shell(tandem_binary() + " " + command + " 2>&1", &status);
    EXPECT_NE(status, 0) << command;
    EXPECT_NE(out.find("--cluster-tls-ca is missing"), std::string::npos) << command << ": " << out;
  }
  int status = 0;
  const std::string out = shell(tandem_binary() + " frontend --port 0 --cluster-tls-cert " + file("member.pem") +
                                    " --cluster-tls-key " + file("intruder.key") + " --cluster-tls-ca " + file("ca.pem") + " 2>&1",
                                &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--cluster-tls-key " + file("intruder.key")), std::string::npos) << out;
}

}  // namespace
}  // namespace tandem::testing
