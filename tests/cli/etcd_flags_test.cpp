// The etcd flags' checks before anything dials etcd (issue 20): etcds:// and its TLS flags
// (--etcd-ca, --etcd-cert, --etcd-key) go together, the client certificate and key go together, and an
// unreadable, non-PEM or mismatched file is an error naming the flag and the file. Certificates are
// made by the openssl CLI (testing/test_certificates.h).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/etcd_flags.h"
#include "common/error.h"
#include "testing/test_certificates.h"

namespace tandem::cli {
namespace {

using testing::TestCertificates;

// The message of the tandem::Error that loading the flags throws; "" when it throws none.
std::string error_of(const EtcdFlags& flags, const std::string& registry) {
  try {
    (void)load_etcd_credentials(flags, registry);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class EtcdFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(certs_.ok()) << "openssl could not make the test certificates"; }
  EtcdFlags with(const std::string& ca, const std::string& cert, const std::string& key) const {
    EtcdFlags flags;
    flags.ca = ca.empty() ? "" : certs_.file(ca);
    flags.cert = cert.empty() ? "" : certs_.file(cert);
    flags.key = key.empty() ? "" : certs_.file(key);
    return flags;
  }
  TestCertificates certs_;
};

TEST_F(EtcdFlagsTest, EtcdsUrlGivesATlsContext_EtcdUrlNone) {
  auto tls = load_etcd_credentials(with("ca.pem", "client.pem", "client.key"), "etcds://127.0.0.1:2379");
  EXPECT_NE(tls.tls, nullptr);
  // No --etcd-ca: the system's trust store; no client certificate.
  EXPECT_NE(load_etcd_credentials(EtcdFlags{}, "etcds://127.0.0.1:2379").tls, nullptr);
  EXPECT_EQ(load_etcd_credentials(EtcdFlags{}, "etcd://127.0.0.1:2379").tls, nullptr);
  EXPECT_EQ(load_etcd_credentials(EtcdFlags{}, "embedded").tls, nullptr);
}

TEST_F(EtcdFlagsTest, TlsFlagsNeedEtcdsUrl) {
  for (const char* registry : {"etcd://127.0.0.1:2379", "embedded", ""}) {
    EXPECT_NE(error_of(with("ca.pem", "", ""), registry).find("--etcd-ca: only with --registry etcds://"), std::string::npos)
        << registry;
    EXPECT_NE(error_of(with("", "client.pem", "client.key"), registry).find("--etcd-cert: only with --registry etcds://"),
              std::string::npos)
        << registry;
    EXPECT_NE(error_of(with("", "", "client.key"), registry).find("--etcd-key: only with --registry etcds://"),
              std::string::npos)
        << registry;
  }
}

TEST_F(EtcdFlagsTest, CertificateAndKeyGoTogether) {
  EXPECT_NE(error_of(with("ca.pem", "client.pem", ""), "etcds://a:1").find("--etcd-key is missing"), std::string::npos);
  EXPECT_NE(error_of(with("ca.pem", "", "client.key"), "etcds://a:1").find("--etcd-cert is missing"), std::string::npos);
}

TEST_F(EtcdFlagsTest, BadFilesAreNamedWithTheirFlag) {
  const std::string garbage = certs_.file("garbage.pem");
  std::ofstream(garbage) << "not a certificate\n";
  struct Case {
    EtcdFlags flags;
    std::string expect;
  };
  EtcdFlags absent_ca = with("", "", "");
  absent_ca.ca = certs_.file("absent.pem");
  EtcdFlags absent_key = with("ca.pem", "client.pem", "");
  absent_key.key = certs_.file("absent.key");
  EtcdFlags garbage_ca = with("", "", "");
  garbage_ca.ca = garbage;
  EtcdFlags garbage_cert = with("ca.pem", "", "client.key");
  garbage_cert.cert = garbage;
  const std::vector<Case> cases = {
      {absent_ca, "--etcd-ca " + certs_.file("absent.pem") + ": cannot read it"},
      {absent_key, "--etcd-key " + certs_.file("absent.key") + ": cannot read it"},
      {garbage_ca, "--etcd-ca " + garbage + ":"},
      {garbage_cert, "--etcd-cert " + garbage + ":"},
      // The key of another certificate.
      {with("ca.pem", "client.pem", "server.key"), "--etcd-key " + certs_.file("server.key") + ": "},
  };
  for (const auto& c : cases) {
    const std::string error = error_of(c.flags, "etcds://127.0.0.1:2379");
    EXPECT_NE(error.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in '" << error << "'";
  }
}

TEST(EtcdUrl, EtcdsIsTheTlsForm) {
  auto endpoints = cluster::parse_etcd_url("etcds://10.0.0.5:2379,etcd-1:2379");
  ASSERT_TRUE(endpoints.ok()) << endpoints.status().message();
  ASSERT_EQ(endpoints->size(), 2u);
  EXPECT_EQ((*endpoints)[1].host, "etcd-1");
  EXPECT_TRUE(cluster::etcd_url_uses_tls("etcds://a:1"));
  EXPECT_FALSE(cluster::etcd_url_uses_tls("etcd://a:1"));
  EXPECT_FALSE(cluster::parse_etcd_url("https://a:1").ok());
  EXPECT_FALSE(cluster::parse_etcd_url("etcds://").ok());
}

}  // namespace
}  // namespace tandem::cli
