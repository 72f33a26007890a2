// The request plane (rpc::Connection, as the frontend's registry and a worker's request port use it)
// and the TCP KV transfer plane with a process cluster key: peers holding it talk as before; a peer
// without it, or with another key, is closed without a message handled or a byte answered, and the
// listener goes on serving the next peer that holds it.
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/socket.h"
#include "plane_peers.h"
#include "rpc/connection.h"
#include "security/cluster_auth.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::security {
namespace {

const std::string kKey = "the cluster key of this test, 32+";
const std::string kOtherKey = "not the cluster key of this test!";

class ClusterPlanes : public ::testing::Test {
 protected:
  void SetUp() override { set_cluster_keys({kKey}); }
  void TearDown() override { set_cluster_keys({}); }
};

TEST_F(ClusterPlanes, RequestPlaneServesPeersWithTheKey) {
  EchoServer server;
  EXPECT_TRUE(round_trip(server.address()));
  EXPECT_EQ(server.handled(), 1);
}

TEST_F(ClusterPlanes, RequestPlaneRefusesAKeylessPeerAndServesTheNext) {
  EchoServer server;
  // A peer without the key speaks the plane's frames at once: 4-byte length + Envelope.
  auto fd = net::dial(server.address(), 2000);
  ASSERT_TRUE(fd.ok());
  std::string body = abort_message("sneaky").SerializeAsString();
  uint32_t length = htonl(static_cast<uint32_t>(body.size()));
  std::string frame(reinterpret_cast<const char*>(&length), 4);
  frame += body;
  ASSERT_TRUE(net::write_full(*fd, frame.data(), frame.size(), "t").ok());
  std::string answered;
  EXPECT_TRUE(closed_by_peer(*fd, &answered));
  EXPECT_EQ(answered, "");  // not even a challenge: the hello was not one
  close(*fd);
  EXPECT_EQ(server.handled(), 0);
  EXPECT_TRUE(round_trip(server.address()));
  EXPECT_EQ(server.handled(), 1);
}

TEST_F(ClusterPlanes, RequestPlaneRefusesAPeerWithAnotherKey) {
  EchoServer server;
  auto fd = net::dial(server.address(), 2000);
  ASSERT_TRUE(fd.ok());
  EXPECT_FALSE(authenticate_dialer(*fd, {kOtherKey}, "test", server.address(), 2000).ok());
  close(*fd);
  EXPECT_EQ(server.handled(), 0);
  EXPECT_TRUE(round_trip(server.address()));
}

TEST_F(ClusterPlanes, DialerRefusesAListenerWithAnotherKey) {
  // The key is process-wide, so the other listener runs its side of the handshake by hand.
  auto listener = net::Listener::bind("127.0.0.1", 0).value();
  std::atomic<bool> acceptor_passed{true};
  listener->start([&](int fd, std::string peer) {
    acceptor_passed = authenticate_acceptor(fd, {kOtherKey}, "test", peer, 2000).ok();
    close(fd);
  });
  auto dialed = rpc::Connection::dial("127.0.0.1:" + std::to_string(listener->port()), 2000);
  EXPECT_FALSE(dialed.ok());
  if (!dialed.ok()) {
    EXPECT_NE(dialed.status().message().find("does not hold this cluster key"), std::string::npos);
  }
  listener->close();
  EXPECT_FALSE(acceptor_passed.load());
}

TEST_F(ClusterPlanes, KeylessListenerRefusesAKeyedDialer) {
  // The key is process-wide: the listener is keyless for the whole test and the dialer's side runs by hand.
  set_cluster_keys({});
  EchoServer server;  // reads the hello's first word as a frame length over the limit and closes
  EXPECT_GT(kHandshakeMagic, rpc::Connection::kMaxFrameBytes);
  auto fd = net::dial(server.address(), 2000);
  ASSERT_TRUE(fd.ok());
  EXPECT_FALSE(authenticate_dialer(*fd, {kKey}, "test", server.address(), 2000).ok());
  close(*fd);
  EXPECT_EQ(server.handled(), 0);
}

TEST_F(ClusterPlanes, KvTransferWritesOnlyForPeersWithTheKey) {
  constexpr size_t kBlockBytes = 64;
  auto dst_memory = transfer::create_host_kv_memory(1, 4, kBlockBytes);
  auto src_memory = transfer::create_host_kv_memory(1, 4, kBlockBytes);
  auto dst = transfer::create_tcp_backend(dst_memory, "127.0.0.1", 0);
  auto src = transfer::create_tcp_backend(src_memory, "127.0.0.1", 0);
  std::vector<std::byte> block(kBlockBytes, std::byte{0x5a});
  ASSERT_TRUE(src_memory->write_block(0, 1, block).ok());

  // A keyless pusher: a whole TKV1 push of block 2, which the receiver must never write.
  dst->expect("evil", {2});
  auto fd = net::dial(transfer::parse_peer_address(dst->address()).tcp, 2000);
  ASSERT_TRUE(fd.ok());
  uint32_t header[5] = {htonl(0x544b5631), htonl(4), htonl(1), 0, htonl(static_cast<uint32_t>(kBlockBytes))};
  std::string frame(reinterpret_cast<const char*>(header), sizeof(header));
  frame += "evil";
  uint32_t where[2] = {htonl(0), htonl(2)};
  frame += std::string(reinterpret_cast<const char*>(where), 8) + std::string(kBlockBytes, 'E');
  ASSERT_TRUE(net::write_full(*fd, frame.data(), frame.size(), "t").ok());
  std::string answered;
  EXPECT_TRUE(closed_by_peer(*fd, &answered));
  EXPECT_EQ(answered, "");  // no ack
  close(*fd);
  std::vector<std::byte> got(kBlockBytes);
  ASSERT_TRUE(dst_memory->read_block(0, 2, got).ok());
  EXPECT_NE(got[0], std::byte{'E'});

  // The pusher with the key: its push lands.
  dst->expect("good", {3});
  std::vector<transfer::BlockCopy> copies = {{0, 1, 3}};
  auto pushed = src->push(dst->address(), "good", copies, 5000);
  ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
  ASSERT_TRUE(dst_memory->read_block(0, 3, got).ok());
  EXPECT_EQ(got[0], std::byte{0x5a});

  // A pusher with another key is refused before it writes anything.
  dst->expect("other", {0});
  auto other = net::dial(transfer::parse_peer_address(dst->address()).tcp, 2000);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(authenticate_dialer(*other, {kOtherKey}, "test", "dst", 2000).ok());
  close(*other);
  ASSERT_TRUE(dst_memory->read_block(0, 0, got).ok());
  EXPECT_NE(got[0], std::byte{0x5a});
  src->shutdown();
  dst->shutdown();
}

}  // namespace
}  // namespace tandem::security
