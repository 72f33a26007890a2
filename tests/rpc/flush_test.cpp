// Connection::flush: what was queued before it reaches the peer even when close() follows at once (a
// worker stopped at once announces its drain, then closes; close() alone drops queued frames).
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "rpc/connection.h"

namespace tandem::rpc {
namespace {

TEST(ConnectionFlush, EverythingQueuedBeforeItArrives_EvenWhenCloseFollowsAtOnce) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  auto sender = Connection::adopt(fds[0], "sender");
  auto receiver = Connection::adopt(fds[1], "receiver");
  std::atomic<int> got{0};
  sender->start([](pb::Envelope&) {}, [](const Status&) {});
  receiver->start([&](pb::Envelope&) { got.fetch_add(1); }, [](const Status&) {});
  pb::Envelope message;
  message.mutable_abort()->set_request_id(std::string(4096, 'r'));
  constexpr int kMessages = 2000;  // 8 MiB: far more than the socket buffers hold at once
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(sender->send(message));
  EXPECT_TRUE(sender->flush(std::chrono::seconds(20)));
  sender->close();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (got.load() < kMessages && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(got.load(), kMessages);
  EXPECT_FALSE(sender->flush(std::chrono::milliseconds(10)));  // closed: nothing more will be written
  receiver->close();
  EXPECT_TRUE(sender->wait_closed(std::chrono::seconds(5)));
  EXPECT_TRUE(receiver->wait_closed(std::chrono::seconds(5)));
}

}  // namespace
}  // namespace tandem::rpc
