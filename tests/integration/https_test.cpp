// HTTPS on the frontend's API (issue 20): certificates made with the openssl CLI in a temporary
// directory; curl (the reference client, not our code) checks the server's certificate against the
// test CA. A request, a stream and /metrics over HTTPS; plain HTTP and a client that does not trust the
// CA fail, and a client that never starts the handshake is closed by the header timeout, while the
// server keeps serving; with --tls-ca a client certificate from that CA is required;
// a missing file, a lone --tls-cert and a key of another certificate are CLI errors naming the flag.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "harness.h"
#include "testing/test_certificates.h"

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

class Https : public ::testing::Test {
 protected:
  // A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a
  // second CA with a client certificate of its own (not to be trusted).
  static void SetUpTestSuite() { certs_ = new TestCertificates(); }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(certs_->ok()) << "openssl could not make the test certificates";
    ASSERT_FALSE(find_program("curl").empty()) << "curl is needed (scripts/setup.sh installs it)";
  }

 public:
  std::string file(const std::string& name) const { return certs_->file(name); }
  // curl's exit status and, on success, the HTTP status then the body ("200 {...}").
  std::string curl(const std::string& url, const std::string& options, int* rc) const {
    return shell("curl -s -N --max-time 20 -w ' %{http_code}' " + options + " '" + url + "'", rc);
  }
  std::string https_args() const { return "--cacert " + file("ca.pem"); }

 protected:
  static TestCertificates* certs_;
};
TestCertificates* Https::certs_ = nullptr;

// The frontend over HTTPS with one fake worker; waits for it to register (read over HTTPS).
struct HttpsCluster {
  Cluster cluster;
  HttpsCluster(const Https& t, std::vector<std::string> extra, const std::string& curl_auth)
      : cluster([&] {
          std::vector<std::string> args = {"--tls-cert", t.file("server.pem"), "--tls-key", t.file("server.key")};
          args.insert(args.end(), extra.begin(), extra.end());
          return args;
        }()) {
    cluster.add_worker("both", {"--engine", "fake"});
    const std::string url = "https://127.0.0.1:" + std::to_string(cluster.http_port()) + "/metrics";
    registered = eventually([&] {
      int rc = 0;
      return metric_value(shell("curl -s --max-time 5 " + curl_auth + " " + url, &rc), "tandem_workers") == 1;
    }, 60000, 100);
  }
  std::string url(const std::string& path) const { return "https://127.0.0.1:" + std::to_string(cluster.http_port()) + path; }
  bool registered = false;
};

const std::string kJson = "-H 'Content-Type: application/json' -d ";

TEST_F(Https, ServesRequestsStreamsAndMetricsOverTls) {
  HttpsCluster h(*this, {}, https_args());
  ASSERT_TRUE(h.registered) << h.cluster.log("frontend");
  int rc = 0;
  std::string out = curl(h.url("/v1/completions"), https_args() + " " + kJson + "'{\"prompt\":[1,2,3],\"max_tokens\":4}'", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"completion_tokens\":4"), std::string::npos) << out;
  EXPECT_EQ(out.substr(out.size() - 3), "200") << out;
  // A stream ends with the connection: curl must see [DONE] and a clean TLS close (exit 0, not 56).
  out = curl(h.url("/v1/completions"), https_args() + " " + kJson + "'{\"prompt\":[1,2,3],\"max_tokens\":3,\"stream\":true}'", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("data: [DONE]"), std::string::npos) << out;
  out = curl(h.url("/health"), https_args(), &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("200"), std::string::npos) << out;
}

TEST_F(Https, PlainHttpAndUntrustingClientsFailWhileServingGoesOn) {
  HttpsCluster h(*this, {"--http-header-timeout-s", "1"}, https_args());
  ASSERT_TRUE(h.registered) << h.cluster.log("frontend");
  int rc = 0;
  // A client that connects and never starts the TLS handshake is closed by the header timeout.
  const std::string port = std::to_string(h.cluster.http_port());
  EXPECT_EQ(shell("timeout 8 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" + port + "; cat <&3 >/dev/null'; echo $?"), "0");
  // Plain HTTP to the TLS port: no HTTP answer.
  std::string out = curl("http://127.0.0.1:" + std::to_string(h.cluster.http_port()) + "/health", "", &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_EQ(http(h.cluster.http_port(), "GET", "/health", "", {}, 3000).status, 0);
  // A client without the test CA does not trust the server.
  curl(h.url("/health"), "", &rc);
  EXPECT_EQ(WEXITSTATUS(rc), 60);  // CURLE_PEER_FAILED_VERIFICATION
  // And the server still serves a client that trusts it.
  out = curl(h.url("/v1/completions"), https_args() + " " + kJson + "'{\"prompt\":[1,2,3],\"max_tokens\":2}'", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.substr(out.size() - 3), "200") << out;
  EXPECT_TRUE(h.cluster.frontend().running());
}

TEST_F(Https, TlsCaRequiresAClientCertificateFromThatCa) {
  const std::string client = https_args() + " --cert " + file("client.pem") + " --key " + file("client.key");
  HttpsCluster h(*this, {"--tls-ca", file("ca.pem")}, client);
  ASSERT_TRUE(h.registered) << h.cluster.log("frontend");
  int rc = 0;
  std::string out = curl(h.url("/v1/completions"), client + " " + kJson + "'{\"prompt\":[1,2,3],\"max_tokens\":2}'", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.substr(out.size() - 3), "200") << out;
  out = curl(h.url("/health"), https_args(), &rc);  // no client certificate
  EXPECT_NE(rc, 0) << out;
  out = curl(h.url("/health"), https_args() + " --cert " + file("intruder.pem") + " --key " + file("intruder.key"), &rc);
  EXPECT_NE(rc, 0) << out;
  out = curl(h.url("/health"), client, &rc);
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(Https, BadCertificateFlagsAreCliErrorsNamingTheFlag) {
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"--tls-cert " + file("absent.pem") + " --tls-key " + file("server.key"), "--tls-cert " + file("absent.pem")},
           {"--tls-cert " + file("server.pem"), "--tls-key"},
           // OpenSSL's own words for it: "key values mismatch".
           {"--tls-cert " + file("server.pem") + " --tls-key " + file("client.key"), "--tls-key " + file("client.key") + ": key values mismatch"},
           {"--tls-cert " + file("server.pem") + " --tls-key " + file("server.key") + " --tls-ca " + file("absent-ca.pem"),
            "--tls-ca " + file("absent-ca.pem")}}) {
    int status = 0;
    const std::string out = shell(tandem_binary() + " frontend --host 127.0.0.1 --port 0 " + c.args + " 2>&1", &status);
    EXPECT_NE(status, 0) << c.args;
    EXPECT_NE(out.find(c.expect), std::string::npos) << c.args << ": " << out;
  }
}

}  // namespace
}  // namespace tandem::testing
