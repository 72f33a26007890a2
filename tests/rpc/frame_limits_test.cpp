// The request plane's reader against frames that lie about their length (tests/fuzz/rpc_frames_fuzz):
// the buffer grows with the bytes that arrive, so a 4-byte length prefix alone costs the reader nothing.
#include <arpa/inet.h>
#include <sys/resource.h>
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
#include "rpc/connection.h"

namespace tandem::rpc {
namespace {

long max_rss_kb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

TEST(FrameLimits, LengthPrefixWithoutItsBytesAllocatesNothingLarge) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto connection = Connection::adopt(fds[0], "test");
  std::atomic<int> messages{0};
  Status reason;
  connection->start([&](pb::Envelope&) { messages.fetch_add(1); }, [&](const Status& s) { reason = s; });
  const long rss_before = max_rss_kb();
  // 200 MiB announced (under kMaxFrameBytes), 10 bytes sent, then the peer goes away.
  const uint32_t length = htonl(200u << 20);
  ASSERT_TRUE(net::write_full(fds[1], &length, 4, "test").ok());
  ASSERT_TRUE(net::write_full(fds[1], "0123456789", 10, "test").ok());
  shutdown(fds[1], SHUT_WR);
  ASSERT_TRUE(connection->wait_closed(std::chrono::seconds(10)));
  EXPECT_EQ(messages.load(), 0);
  EXPECT_FALSE(reason.ok());
  // The reader used to zero the whole 200 MiB before reading the first byte.
  EXPECT_LT(max_rss_kb() - rss_before, 64 * 1024);
  close(fds[1]);
}

TEST(FrameLimits, FrameLargerThanOneStepStillArrivesWhole) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto connection = Connection::adopt(fds[0], "test");
  std::atomic<size_t> got{0};
  connection->start([&](pb::Envelope& m) { got = m.abort().request_id().size(); }, [](const Status&) {});
  pb::Envelope envelope;
  envelope.mutable_abort()->set_request_id(std::string(3u << 20, 'r'));  // 3 MiB: several read steps
  std::string frame(4, '\0');
  ASSERT_TRUE(envelope.AppendToString(&frame));
  const uint32_t length = htonl(static_cast<uint32_t>(frame.size() - 4));
  std::memcpy(frame.data(), &length, 4);
  std::thread writer([&] { (void)net::write_full(fds[1], frame.data(), frame.size(), "test"); shutdown(fds[1], SHUT_WR); });
  ASSERT_TRUE(connection->wait_closed(std::chrono::seconds(20)));
  writer.join();
  EXPECT_EQ(got.load(), 3u << 20);
  close(fds[1]);
}


std::string framed(const pb::Envelope& envelope) {
  std::string frame(4, '\0');
  EXPECT_TRUE(envelope.AppendToString(&frame));
  const uint32_t length = htonl(static_cast<uint32_t>(frame.size() - 4));
  std::memcpy(frame.data(), &length, 4);
  return frame;
}

// The reader takes whatever the socket has: many frames in one read, and frames cut anywhere across
// reads (here one byte a write, then two frames whose boundary falls inside a length prefix), each
// handled once, whole and in order.
TEST(FrameLimits, FramesPackedInOneReadOrSplitAcrossReadsArriveInOrder) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto connection = Connection::adopt(fds[0], "test");
  std::mutex mu;
  std::vector<std::string> ids;
  connection->start(
      [&](pb::Envelope& m) {
        std::lock_guard<std::mutex> lock(mu);
        ids.push_back(m.output().request_id());
      },
      [](const Status&) {});
  auto output = [](const std::string& id) {
    pb::Envelope e;
    e.mutable_output()->set_request_id(id);
    e.mutable_output()->add_token_ids(7);
    return framed(e);
  };
  std::vector<std::string> expected;
  std::string burst;
  for (int i = 0; i < 5000; ++i) {  // ~100 KB: more than one read takes, so some frame is cut
    expected.push_back("burst-" + std::to_string(i));
    burst += output(expected.back());
  }
  const std::string slow = output("byte-by-byte");
  expected.push_back("byte-by-byte");
  // Of different lengths, so that a length prefix left over from the first cannot pass for the second's.
  const std::string pair = output("split-a") + output("split-b-with-a-longer-id");
  expected.push_back("split-a");
  expected.push_back("split-b-with-a-longer-id");
  std::thread writer([&] {
    (void)net::write_full(fds[1], burst.data(), burst.size(), "test");
    for (char c : slow) {
      (void)net::write_full(fds[1], &c, 1, "test");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    // The cut falls two bytes into the second frame's length prefix.
    const size_t cut = output("split-a").size() + 2;
    (void)net::write_full(fds[1], pair.data(), cut, "test");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    (void)net::write_full(fds[1], pair.data() + cut, pair.size() - cut, "test");
    shutdown(fds[1], SHUT_WR);
  });
  ASSERT_TRUE(connection->wait_closed(std::chrono::seconds(20)));
  writer.join();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(ids, expected);
  close(fds[1]);
}

}  // namespace
}  // namespace tandem::rpc
