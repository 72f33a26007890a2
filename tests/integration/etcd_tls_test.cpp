// Cluster mode with etcd over TLS (issue 20, --registry etcds://): a real etcd started by the test with
// https listen URLs and certificates made by the openssl CLI (testing/test_certificates.h). With
// --client-cert-auth, a frontend and workers given --etcd-ca/--etcd-cert/--etcd-key register, find
// each other through the watch (a worker that leaves is seen as a DELETE event on the TLS stream) and
// serve a remote prefill; with etcd's authentication on, --etcd-user's password goes over TLS. A CA that
// did not sign etcd's certificate, a certificate that does not name the address dialed, a missing or
// foreign client certificate are CLI errors at start naming the flag, quickly; etcd:// against an https
// etcd is a warning saying to use etcds://.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "harness.h"
#include "start_refusal.h"
#include "testing/dependencies.h"
#include "testing/test_certificates.h"

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

std::string long_prompt(int seed) { return R"({"prompt":[)" + random_prompt_ids(40, seed) + R"(],"max_tokens":4})"; }

class EtcdTls : public ::testing::Test {
 protected:
  void SetUp() override {
    TANDEM_SKIP_OR_FAIL_IF_MISSING(!EtcdServer::available(), "etcd and etcdctl (Debian packages etcd-server, etcd-client)");
    ASSERT_TRUE(certs_.ok()) << "openssl could not make the test certificates";
    char tmpl[] = "/tmp/tandem-etcd-tls-XXXXXX";
    dir_ = mkdtemp(tmpl);
    port_ = free_port();
    second_port_ = free_port();
    peer_port_ = free_port();
  }
  void TearDown() override {
    etcd_.kill_now();
    if (!std::getenv("TANDEM_KEEP_TEST_LOGS")) fs::remove_all(dir_);
  }

  // etcd serving https on 127.0.0.1:port_ and on 127.0.0.2:second_port_ (an address its certificate,
  // made for 127.0.0.1 and localhost, does not name), with server.pem; `client_cert_auth`: it requires
  // a client certificate signed by ca.pem.
  void start_etcd(bool client_cert_auth) {
    const std::string clients = "https://127.0.0.1:" + std::to_string(port_) + ",https://127.0.0.2:" + std::to_string(second_port_);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> argv = {find_program("etcd"), "--name", "test", "--data-dir", dir_ + "/data",
                                     "--listen-client-urls", clients, "--advertise-client-urls",
                                     "https://127.0.0.1:" + std::to_string(port_), "--listen-peer-urls", peer,
                                     "--initial-advertise-peer-urls", peer, "--initial-cluster", "test=" + peer,
                                     "--cert-file", certs_.file("server.pem"), "--key-file", certs_.file("server.key"),
                                     "--logger", "zap", "--log-level", "warn"};
    if (client_cert_auth) argv.insert(argv.end(), {"--client-cert-auth", "--trusted-ca-file", certs_.file("ca.pem")});
    etcd_ = Process(argv, dir_ + "/etcd.log");
    ASSERT_TRUE(eventually([&] { return ctl("endpoint health").find("is healthy") != std::string::npos; }, 20000, 100))
        << ctl("endpoint health") << shell("cat " + dir_ + "/etcd.log");
  }
  // etcdctl (the reference client) over TLS with the CA and the client certificate.
  std::string ctl(const std::string& args, int* status = nullptr) {
    return shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=https://127.0.0.1:" + std::to_string(port_) +
                     " --cacert " + certs_.file("ca.pem") + " --cert " + certs_.file("client.pem") + " --key " +
                     certs_.file("client.key") + " --command-timeout=5s" + (ctl_user_.empty() ? "" : " --user '" + ctl_user_ + "'") +
                     " " + args + " 2>&1",
                 status);
  }
  std::string url() const { return "etcds://127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> registry_args(std::vector<std::string> tls) const {
    std::vector<std::string> args = {"--registry", url(), "--namespace", "tls"};
    args.insert(args.end(), tls.begin(), tls.end());
    return args;
  }
  std::vector<std::string> client_certificate() const {
    return {"--etcd-ca", certs_.file("ca.pem"), "--etcd-cert", certs_.file("client.pem"), "--etcd-key", certs_.file("client.key")};
  }

  TestCertificates certs_;
  std::string dir_;
  int port_ = 0;
  int second_port_ = 0;
  int peer_port_ = 0;
  std::string ctl_user_;
  Process etcd_;
};

TEST_F(EtcdTls, ClientCertificates_RegisterDiscoverServe_WatchOverTls) {
  start_etcd(/*client_cert_auth=*/true);
  std::vector<std::string> frontend = registry_args(client_certificate());
  frontend.insert(frontend.end(), {"--max-local-prefill", "16"});
  Cluster cluster(frontend);
  ASSERT_NE(cluster.http_port(), 0) << cluster.log("frontend");
  cluster.set_worker_registry(registry_args(client_certificate()));
  cluster.add_worker("prefill", {"--engine", "fake"});
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(2)) << cluster.log("frontend") << cluster.log("decode-1");
  // The records are in etcd, as etcdctl reads them over TLS.
  int status = 0;
  const std::string records = ctl("get --prefix --keys-only /tandem/tls/workers/", &status);
  EXPECT_EQ(status, 0) << records;
  EXPECT_NE(records.find("/tandem/tls/workers/prefill/prefill-0"), std::string::npos) << records;
  EXPECT_NE(records.find("/tandem/tls/workers/decode/decode-1"), std::string::npos) << records;
  EXPECT_EQ(cluster.post("/v1/completions", long_prompt(1)).status, 200);
  EXPECT_EQ(cluster.metric("tandem_remote_prefills_total"), 1) << cluster.log("frontend");

  // The decode worker leaves (SIGTERM revokes its lease): the frontend hears of it as a DELETE on its
  // watch stream (a snapshot read after a broken watch would say "not in etcd" instead).
  cluster.worker(1).terminate();
  ASSERT_TRUE(eventually([&] {
    return cluster.log("frontend").find("event=worker_unlisted worker_id=decode-1 reason=\"lease expired or revoked\"") !=
           std::string::npos;
  }, 30000, 100)) << cluster.log("frontend");
  // A new one is listed from the same watch, and serves.
  cluster.add_worker("decode", {"--engine", "fake"});
  ASSERT_TRUE(eventually([&] {
    return cluster.log("frontend").find("event=worker_registered worker_id=decode-2") != std::string::npos;
  }, 60000, 100)) << cluster.log("frontend") << cluster.log("decode-2");
  ASSERT_TRUE(cluster.wait_for_workers(2));
  EXPECT_EQ(cluster.post("/v1/completions", long_prompt(2)).status, 200);
  EXPECT_EQ(cluster.log("frontend").find("event=etcd_watch_lost"), std::string::npos) << cluster.log("frontend");
  EXPECT_EQ(cluster.log("frontend").find("event=etcd_unreachable"), std::string::npos) << cluster.log("frontend");
}

TEST_F(EtcdTls, UserAndPasswordOverTls) {
  start_etcd(/*client_cert_auth=*/false);
  const std::string password = "pw-over-tls-7";
  int status = 0;
  ctl("role add root", &status);
  for (const std::string& args :
       {std::string("user add root --new-user-password=root-pw"), std::string("user grant-role root root"),
        std::string("role add tandem"), std::string("role grant-permission tandem readwrite --prefix=true /tandem/tls/"),
        "user add tandem --new-user-password=" + password, std::string("user grant-role tandem tandem"),
        std::string("auth enable")}) {
    const std::string out = ctl(args, &status);
    ASSERT_EQ(status, 0) << "etcdctl " << args << ": " << out;
  }
  ctl_user_ = "root:root-pw";
  const std::string password_file = dir_ + "/password";
  std::ofstream(password_file) << password << "\n";
  // The system's trust store does not hold the test CA, so --etcd-ca is given; no client certificate.
  const std::vector<std::string> args =
      registry_args({"--etcd-ca", certs_.file("ca.pem"), "--etcd-user", "tandem", "--etcd-password-file", password_file});
  Cluster cluster(args);
  ASSERT_NE(cluster.http_port(), 0) << cluster.log("frontend");
  cluster.set_worker_registry(args);
  cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1)) << cluster.log("frontend") << cluster.log("both-0");
  EXPECT_EQ(cluster.post("/v1/completions", long_prompt(3)).status, 200);
  EXPECT_NE(cluster.log("frontend").find("event=etcd_authenticated user=tandem"), std::string::npos) << cluster.log("frontend");
  EXPECT_NE(ctl("get --prefix --keys-only /tandem/tls/workers/").find("/tandem/tls/workers/both/both-0"), std::string::npos);
  // A wrong password over TLS is still etcd's refusal, named as such.
  const std::string wrong = dir_ + "/wrong";
  std::ofstream(wrong) << "not-it\n";
  expect_start_refused("--registry " + url() + " --namespace tls --etcd-ca " + certs_.file("ca.pem") +
                           " --etcd-user tandem --etcd-password-file " + wrong,
                       {"--etcd-user", "authentication failed"});
}

// etcd's certificate, checked against a CA that did not sign it, or against an address it does not name.
TEST_F(EtcdTls, UntrustedServerCertificateIsACliErrorNamingEtcdCa) {
  start_etcd(/*client_cert_auth=*/false);
  expect_start_refused("--registry " + url() + " --etcd-ca " + certs_.file("other-ca.pem"),
                       {"--etcd-ca", "certificate failed verification"});
  // No --etcd-ca: the system's trust store, which does not hold the test CA.
  expect_start_refused("--registry " + url(), {"--etcd-ca", "certificate failed verification"});
  // The right CA, but 127.0.0.2 is not in the certificate (IP:127.0.0.1, DNS:localhost).
  expect_start_refused("--registry etcds://127.0.0.2:" + std::to_string(second_port_) + " --etcd-ca " + certs_.file("ca.pem"),
                       {"--etcd-ca", "IP address mismatch"});
  // Plain HTTP to an https etcd: etcd closes without an answer, which an etcd restarting might do too,
  // so the process starts, and its warning says to use etcds://.
  int status = 0;
  const std::string out = shell("timeout -s INT 5 " + tandem_binary() + " worker --engine fake --registry etcd://127.0.0.1:" +
                                    std::to_string(port_) + " 2>&1",
                                &status);
  EXPECT_NE(out.find("event=etcd_unreachable"), std::string::npos) << out;
  EXPECT_NE(out.find("give --registry etcds://127.0.0.1:" + std::to_string(port_)), std::string::npos) << out;
}

TEST_F(EtcdTls, MissingOrForeignClientCertificateIsACliErrorNamingEtcdCert) {
  start_etcd(/*client_cert_auth=*/true);
  const std::string ca = " --etcd-ca " + certs_.file("ca.pem");
  expect_start_refused("--registry " + url() + ca, {"--etcd-cert", "refused this process's client certificate"});
  // Signed by a CA etcd does not trust.
  expect_start_refused("--registry " + url() + ca + " --etcd-cert " + certs_.file("intruder.pem") + " --etcd-key " +
                           certs_.file("intruder.key"),
                       {"--etcd-cert", "refused this process's client certificate"});
}

}  // namespace
}  // namespace tandem::testing
