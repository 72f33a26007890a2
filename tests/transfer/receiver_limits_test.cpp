// The TCP KV receiver against frames that lie about their block size (tests/fuzz/kv_transfer_fuzz):
// records of the wrong size are drained through the receiver's own block buffer, never allocated, and
// the connection stays usable after the refusal.
#include <arpa/inet.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/socket.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace tandem::transfer {
namespace {

constexpr uint32_t kPushMagic = 0x544b5631;  // "TKV1"
constexpr size_t kBlockBytes = 64;

long max_rss_kb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// A TKV1 header: id length, record count, block bytes (big-endian u64), then the id.
std::string push_header(const std::string& id, uint32_t records, uint64_t block_bytes) {
  uint32_t words[4] = {htonl(kPushMagic), htonl(static_cast<uint32_t>(id.size())), htonl(records), 0};
  std::string out(reinterpret_cast<const char*>(words), 12);
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((block_bytes >> shift) & 0xff);
  return out + id;
}

std::string record(int32_t layer, int32_t block, size_t bytes, char fill) {
  uint32_t where[2] = {htonl(static_cast<uint32_t>(layer)), htonl(static_cast<uint32_t>(block))};
  return std::string(reinterpret_cast<const char*>(where), 8) + std::string(bytes, fill);
}

// Reads one ack: its status code (0 = OK).
uint32_t read_ack_code(int fd) {
  uint32_t ack[3];
  if (!net::read_full(fd, ack, sizeof(ack), "test").ok()) return 0xffffffff;
  std::string message(ntohl(ack[2]), '\0');
  if (!net::read_full(fd, message.data(), message.size(), "test").ok()) return 0xffffffff;
  return ntohl(ack[1]);
}

class ReceiverLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    memory_ = create_host_kv_memory(1, 4, kBlockBytes);
    backend_ = create_tcp_backend(memory_, "127.0.0.1", 0);
    auto fd = net::dial(parse_peer_address(backend_->address()).tcp, 2000);
    ASSERT_TRUE(fd.ok());
    fd_ = *fd;
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    backend_->shutdown();
  }
  std::shared_ptr<KvMemory> memory_;
  std::unique_ptr<TransferBackend> backend_;
  int fd_ = -1;
};

TEST_F(ReceiverLimits, HugeDeclaredBlockSizeAllocatesNothingLarge) {
  const long rss_before = max_rss_kb();
  std::string frame = push_header("x", 1, uint64_t{1} << 30) + record(0, 0, 100, 'a');
  ASSERT_TRUE(net::write_full(fd_, frame.data(), frame.size(), "test").ok());
  shutdown(fd_, SHUT_WR);
  char byte;
  EXPECT_EQ(recv(fd_, &byte, 1, 0), 0);  // the receiver drops the cut-short connection, no ack
  // It used to zero a 1 GiB buffer on reading the header.
  EXPECT_LT(max_rss_kb() - rss_before, 256 * 1024);
}

TEST_F(ReceiverLimits, WrongGeometryIsRefusedAndTheConnectionStaysUsable) {
  backend_->expect("t", {2});
  // Records of 3 bytes (not the receiver's 64), then 200 bytes: both drained and refused.
  std::string frames = push_header("t", 2, 3) + record(0, 0, 3, 'a') + record(0, 0, 3, 'b') +
                       push_header("t", 1, 200) + record(0, 0, 200, 'c') +
                       push_header("t", 1, kBlockBytes) + record(0, 2, kBlockBytes, 'd');
  ASSERT_TRUE(net::write_full(fd_, frames.data(), frames.size(), "test").ok());
  EXPECT_EQ(read_ack_code(fd_), static_cast<uint32_t>(StatusCode::kInvalidArgument));
  EXPECT_EQ(read_ack_code(fd_), static_cast<uint32_t>(StatusCode::kInvalidArgument));
  EXPECT_EQ(read_ack_code(fd_), 0u);  // the well-formed push after them lands
  std::vector<std::byte> block(kBlockBytes);
  ASSERT_TRUE(memory_->read_block(0, 2, block).ok());
  EXPECT_EQ(block[0], std::byte{'d'});
  EXPECT_EQ(block[kBlockBytes - 1], std::byte{'d'});
}

}  // namespace
}  // namespace tandem::transfer
