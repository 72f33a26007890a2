// Mutual TLS on the request plane (rpc::Connection) and the TCP KV transfer plane, with certificates
// made by the openssl CLI: members of the cluster (a certificate the cluster CA signed) talk, inside TLS
// and with the cluster key too; a client without a certificate, one whose certificate another CA signed,
// a plain-TCP peer and garbage are closed without a message handled, a byte of data answered or a KV
// block written, and the listener goes on serving members; a dialer refuses a listener the CA did not
// sign. The refused peers use OpenSSL directly or TlsStream with other files, never the process's context.
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/socket.h"
#include "plane_peers.h"
#include "rpc/connection.h"
#include "security/cluster_auth.h"
#include "security/cluster_channel.h"
#include "security/tls_stream.h"
#include "testing/test_certificates.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::security {
namespace {

using testing::TestCertificates;

// A request-plane frame: a 4-byte length and an Envelope.
std::string abort_frame(const std::string& id) {
  std::string body = abort_message(id).SerializeAsString();
  uint32_t length = htonl(static_cast<uint32_t>(body.size()));
  return std::string(reinterpret_cast<const char*>(&length), 4) + body;
}

// A TLS client made with OpenSSL's own blocking calls (not TlsStream): it trusts `ca` and presents
// `cert` when given, sends `frame` once its handshake is done, and reads until the server closes or as
// many bytes as it sent came back (an echo). The application data the server sent back; "<no
// handshake>" when its own handshake failed.
std::string openssl_client_exchange(const std::string& address, const std::string& ca, const std::string& cert,
                                    const std::string& key, const std::string& frame) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!cert.empty()) {
    SSL_CTX_use_certificate_chain_file(ctx, cert.c_str());
    SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM);
  }
  auto fd = net::dial(address, 2000);
  std::string got;
  if (fd.ok()) {
    timeval tv{5, 0};
    setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, *fd);
    if (SSL_connect(ssl) != 1) {
      got = "<no handshake>";
    } else {
      SSL_write(ssl, frame.data(), static_cast<int>(frame.size()));
      char buffer[256];
      int n;
      while (got.size() < frame.size() && (n = SSL_read(ssl, buffer, sizeof(buffer))) > 0) {
        got.append(buffer, static_cast<size_t>(n));
      }
    }
    SSL_free(ssl);
    close(*fd);
  } else {
    got = "<no connection>";
  }
  SSL_CTX_free(ctx);
  return got;
}

class ClusterTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    signal(SIGPIPE, SIG_IGN);  // the OpenSSL client above writes with write(2) to servers that drop it
    certs_ = new TestCertificates();
  }
  static void TearDownTestSuite() {
    delete certs_;
    certs_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(certs_->ok()) << "openssl could not make the test certificates";
    auto member = context("member");
    ASSERT_TRUE(member.ok()) << member.status().to_string();
    set_cluster_tls(*member);
  }
  void TearDown() override {
    set_cluster_tls(nullptr);
    set_cluster_keys({});
  }
  // A context with <name>.pem/.key that trusts the cluster CA (intruder: its certificate is not the CA's).
  static StatusOr<std::shared_ptr<const TlsContext>> context(const std::string& name, const std::string& ca = "ca.pem") {
    return TlsContext::load({file(name + ".pem"), file(name + ".key"), file(ca)}, "--cluster-tls");
  }
  static std::string file(const std::string& name) { return certs_->file(name); }
  static TestCertificates* certs_;
};
TestCertificates* ClusterTls::certs_ = nullptr;

TEST_F(ClusterTls, RequestPlaneServesMembersOverTls) {
  EchoServer server;
  EXPECT_TRUE(round_trip(server.address()));
  EXPECT_EQ(server.handled(), 1);
  // The reference client with a member's certificate gets its echo back: the plane speaks real TLS.
  const std::string echoed =
      openssl_client_exchange(server.address(), file("ca.pem"), file("member.pem"), file("member.key"), abort_frame("r7"));
  EXPECT_EQ(echoed.size(), abort_frame("r7").size());
  EXPECT_NE(echoed.find("r7"), std::string::npos);
}

TEST_F(ClusterTls, TlsAndTheClusterKeyTogether) {
  set_cluster_keys({"the cluster key of this test, 32+"});
  EchoServer server;
  EXPECT_TRUE(round_trip(server.address()));
  // A member's certificate without the key is refused by the challenge inside TLS.
  const std::string got =
      openssl_client_exchange(server.address(), file("ca.pem"), file("member.pem"), file("member.key"), abort_frame("x"));
  EXPECT_EQ(got, "");
  EXPECT_EQ(server.handled(), 1);
}

TEST_F(ClusterTls, RequestPlaneRefusesPeersWithoutAMembersCertificate) {
  EchoServer server;
  // No certificate at all; a certificate another CA signed; plain TCP speaking the plane's frames.
  EXPECT_EQ(openssl_client_exchange(server.address(), file("ca.pem"), "", "", abort_frame("nocert")), "");
  EXPECT_EQ(openssl_client_exchange(server.address(), file("ca.pem"), file("intruder.pem"), file("intruder.key"),
                                    abort_frame("intruder")),
            "");
  auto fd = net::dial(server.address(), 2000);
  ASSERT_TRUE(fd.ok());
  const std::string frame = abort_frame("plain");
  ASSERT_TRUE(net::write_full(*fd, frame.data(), frame.size(), "t").ok());
  std::string answered;
  EXPECT_TRUE(closed_by_peer(*fd, &answered));
  close(*fd);
  // At most a TLS alert record (content type 21), never a frame.
  EXPECT_TRUE(answered.empty() || answered[0] == '\x15') << answered.size();
  EXPECT_EQ(server.handled(), 0);
  EXPECT_TRUE(round_trip(server.address()));
  EXPECT_EQ(server.handled(), 1);
}

TEST_F(ClusterTls, DialerRefusesAListenerTheClusterCaDidNotSign) {
  auto intruder = context("intruder");
  ASSERT_TRUE(intruder.ok()) << intruder.status().to_string();
  auto listener = net::Listener::bind("127.0.0.1", 0).value();
  std::atomic<bool> listener_passed{true};
  listener->start([&](int fd, std::string peer) {
    listener_passed = TlsStream::handshake(**intruder, fd, peer, /*server=*/true, 3000).ok();
    close(fd);
  });
  auto dialed = rpc::Connection::dial("127.0.0.1:" + std::to_string(listener->port()), 2000);
  EXPECT_FALSE(dialed.ok());
  if (!dialed.ok()) {
    EXPECT_NE(dialed.status().message().find("TLS handshake"), std::string::npos) << dialed.status().message();
  }
  listener->close();
  EXPECT_FALSE(listener_passed.load());
}

TEST_F(ClusterTls, GarbageAndSilenceOnATlsPortAreDroppedAndServingGoesOn) {
  EchoServer server;
  std::string garbage;
  for (int i = 0; i < 4096; ++i) garbage += static_cast<char>((i * 131 + 7) & 0xff);
  // A TLS record header that announces a huge record, then junk; and random bytes.
  for (const std::string& junk : {std::string("\x16\x03\x01\xff\xff", 5) + garbage, garbage}) {
    auto fd = net::dial(server.address(), 2000);
    ASSERT_TRUE(fd.ok());
    (void)net::write_full(*fd, junk.data(), junk.size(), "t");
    std::string answered;
    EXPECT_TRUE(closed_by_peer(*fd, &answered));
    close(*fd);
    EXPECT_TRUE(answered.empty() || answered[0] == '\x15') << answered.size();
  }
  // A peer that connects and says nothing is dropped once the handshake's time is up.
  auto silent = net::dial(server.address(), 2000);
  ASSERT_TRUE(silent.ok());
  std::string answered;
  EXPECT_TRUE(closed_by_peer(*silent, &answered, kHandshakeTimeoutMs / 1000 + 5));
  close(*silent);
  EXPECT_EQ(server.handled(), 0);
  EXPECT_TRUE(round_trip(server.address()));
}

TEST_F(ClusterTls, KvTransferMovesBlocksOverTlsAndRefusesOthers) {
  constexpr size_t kBlockBytes = 4096;  // over one TLS record's worth per push
  auto dst_memory = transfer::create_host_kv_memory(2, 8, kBlockBytes);
  auto src_memory = transfer::create_host_kv_memory(2, 8, kBlockBytes);
  auto dst = transfer::create_tcp_backend(dst_memory, "127.0.0.1", 0);
  auto src = transfer::create_tcp_backend(src_memory, "127.0.0.1", 0);
  // Distinct bytes per layer and block, so that a block landing in the wrong place shows.
  auto pattern = [](int layer, int block) {
    std::vector<std::byte> bytes(kBlockBytes);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>((i * 7 + layer * 31 + block * 13) & 0xff);
    return bytes;
  };
  for (int layer = 0; layer < 2; ++layer) {
    for (int block = 0; block < 3; ++block) ASSERT_TRUE(src_memory->write_block(layer, block, pattern(layer, block)).ok());
  }
  // Two pushes, the second on the pooled TLS connection.
  for (const auto& [id, first_dst] : std::vector<std::pair<std::string, int>>{{"t1", 4}, {"t2", 1}}) {
    dst->expect(id, {first_dst, first_dst + 1, first_dst + 2});
    std::vector<transfer::BlockCopy> copies;
    for (int layer = 0; layer < 2; ++layer) {
      for (int block = 0; block < 3; ++block) copies.push_back({layer, block, first_dst + block});
    }
    auto pushed = src->push(dst->address(), id, copies, 5000);
    ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
    EXPECT_EQ(pushed->num_blocks, 6);
    for (int layer = 0; layer < 2; ++layer) {
      for (int block = 0; block < 3; ++block) {
        std::vector<std::byte> got(kBlockBytes);
        ASSERT_TRUE(dst_memory->read_block(layer, first_dst + block, got).ok());
        EXPECT_EQ(got, pattern(layer, block)) << id << " layer " << layer << " block " << block;
      }
    }
    dst->forget(id);
  }
  // A pusher whose certificate another CA signed sends a whole push of block 0: refused at the
  // handshake, nothing written.
  dst->expect("evil", {0});
  const std::string address = transfer::parse_peer_address(dst->address()).tcp;
  uint32_t header[5] = {htonl(0x544b5631), htonl(4), htonl(1), 0, htonl(static_cast<uint32_t>(kBlockBytes))};
  std::string frame(reinterpret_cast<const char*>(header), sizeof(header));
  frame += "evil";
  uint32_t where[2] = {htonl(0), htonl(0)};
  frame += std::string(reinterpret_cast<const char*>(where), 8) + std::string(kBlockBytes, 'E');
  EXPECT_EQ(openssl_client_exchange(address, file("ca.pem"), file("intruder.pem"), file("intruder.key"), frame), "");
  EXPECT_EQ(openssl_client_exchange(address, file("ca.pem"), "", "", frame), "");
  auto fd = net::dial(address, 2000);  // and in plain TCP
  ASSERT_TRUE(fd.ok());
  (void)net::write_full(*fd, frame.data(), frame.size(), "t");
  std::string answered;
  EXPECT_TRUE(closed_by_peer(*fd, &answered));
  close(*fd);
  std::vector<std::byte> got(kBlockBytes);
  ASSERT_TRUE(dst_memory->read_block(0, 0, got).ok());
  EXPECT_NE(got[0], std::byte{'E'});
  src->shutdown();
  dst->shutdown();
}

TEST_F(ClusterTls, BadFilesAreErrorsNamingTheFlag) {
  struct Case {
    TlsFiles files;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {{file("member.pem"), file("member.key"), ""}, "--cluster-tls-ca is missing"},
           {{file("absent.pem"), file("member.key"), file("ca.pem")}, "--cluster-tls-cert " + file("absent.pem") + ": cannot read it"},
           {{file("member.pem"), file("client.key"), file("ca.pem")}, "--cluster-tls-key " + file("client.key")},
           {{file("member.pem"), file("member.key"), file("member.key")}, "--cluster-tls-ca " + file("member.key")}}) {
    auto loaded = TlsContext::load(c.files, "--cluster-tls");
    ASSERT_FALSE(loaded.ok()) << c.expect;
    EXPECT_NE(loaded.status().message().find(c.expect), std::string::npos) << loaded.status().message();
  }
}

}  // namespace
}  // namespace tandem::security
