// Request plane transport: framing, multiplexing many requests on one connection, and a lost
// connection reported at once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/socket.h"
#include "rpc/connection.h"
#include "testing/wait.h"

namespace tandem::rpc {
namespace {

using namespace std::chrono_literals;

// An echo server: answers every Generate with `num_outputs` Outputs for that request id.
struct EchoServer {
  std::unique_ptr<net::Listener> listener;
  std::mutex mu;
  std::vector<std::shared_ptr<Connection>> conns;
  int num_outputs = 3;

  EchoServer() {
    auto l = net::Listener::bind("127.0.0.1", 0);
    EXPECT_TRUE(l.ok());
    listener = std::move(*l);
    listener->start([this](int fd, std::string peer) {
      auto conn = Connection::adopt(fd, peer);
      std::weak_ptr<Connection> weak = conn;
      conn->start(
          [this, weak](pb::Envelope& env) {
            auto c = weak.lock();
            if (!c || !env.has_generate()) return;
            for (int i = 0; i < num_outputs; ++i) {
              pb::Envelope out;
              out.mutable_output()->set_request_id(env.generate().request_id());
              out.mutable_output()->add_token_ids(i);
              out.mutable_output()->set_finished(i == num_outputs - 1);
              c->send(out);
            }
          },
          [](const Status&) {});
      std::lock_guard<std::mutex> lock(mu);
      conns.push_back(conn);
    });
  }
  ~EchoServer() {
    listener->close();
    std::lock_guard<std::mutex> lock(mu);
    for (auto& c : conns) c->close();
    // The server side's reader threads still log and run handlers after close(): let them finish
    // before the test (and at the last test, the process) tears down what they touch.
    for (auto& c : conns) EXPECT_TRUE(c->wait_closed(std::chrono::seconds(5)));
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(listener->port()); }
  size_t num_connections() {
    std::lock_guard<std::mutex> lock(mu);
    return conns.size();
  }
};

TEST(Connection, MultiplexesManyRequestsOnOneConnection) {
  EchoServer server;
  auto conn = Connection::dial(server.address(), 1000);
  ASSERT_TRUE(conn.ok()) << conn.status().to_string();
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, int> outputs;
  int finished = 0;
  (*conn)->start(
      [&](pb::Envelope& env) {
        std::lock_guard<std::mutex> lock(mu);
        outputs[env.output().request_id()]++;
        if (env.output().finished()) ++finished;
        cv.notify_all();
      },
      [](const Status&) {});
  const int kRequests = 200;
  for (int i = 0; i < kRequests; ++i) {
    pb::Envelope env;
    env.mutable_generate()->set_request_id("r" + std::to_string(i));
    ASSERT_TRUE((*conn)->send(env));
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return finished == kRequests; }));
  for (const auto& [id, count] : outputs) EXPECT_EQ(count, 3) << id;
  EXPECT_EQ(outputs.size(), static_cast<size_t>(kRequests));
  lock.unlock();
  (*conn)->close();
  EXPECT_TRUE((*conn)->wait_closed(5s));
}

TEST(Connection, PeerGoingAwayIsReportedAtOnce) {
  auto server = std::make_unique<EchoServer>();
  auto conn = Connection::dial(server->address(), 1000);
  ASSERT_TRUE(conn.ok());
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  Status reason;
  (*conn)->start([](pb::Envelope&) {},
                 [&](const Status& s) {
                   std::lock_guard<std::mutex> lock(mu);
                   closed = true;
                   reason = s;
                   cv.notify_all();
                 });
  // The server side must hold the connection, so that it is a peer going away (not a dial refused).
  ASSERT_TRUE(tandem::testing::wait_until([&] { return server->num_connections() == 1; }, 5s));
  auto start = std::chrono::steady_clock::now();
  server.reset();  // closes the server side of the connection
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 2s, [&] { return closed; }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(reason.code(), StatusCode::kUnavailable) << reason.to_string();
  EXPECT_FALSE((*conn)->send(pb::Envelope()));
  EXPECT_TRUE((*conn)->wait_closed(5s));
}

TEST(Connection, DialToNothingFailsWithUnavailable) {
  auto listener = net::Listener::bind("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  std::string address = "127.0.0.1:" + std::to_string((*listener)->port());
  (*listener)->close();
  auto conn = Connection::dial(address, 500);
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(conn.status().message().find(address), std::string::npos);
}

TEST(Connection, CorruptFrameClosesTheConnection) {
  auto listener = net::Listener::bind("127.0.0.1", 0);
  ASSERT_TRUE(listener.ok());
  std::atomic<int> server_fd{-1};
  (*listener)->start([&](int fd, std::string) { server_fd = fd; });
  auto conn = Connection::dial("127.0.0.1:" + std::to_string((*listener)->port()), 1000);
  ASSERT_TRUE(conn.ok());
  std::mutex mu;
  std::condition_variable cv;
  Status reason;
  bool closed = false;
  (*conn)->start([](pb::Envelope&) {},
                 [&](const Status& s) {
                   std::lock_guard<std::mutex> lock(mu);
                   reason = s;
                   closed = true;
                   cv.notify_all();
                 });
  ASSERT_TRUE(tandem::testing::wait_until([&] { return server_fd >= 0; }, 5s, 1ms)) << "the listener never accepted";
  const unsigned char frame[] = {0xff, 0xff, 0xff, 0xff};  // 4 GiB: over the frame limit
  ASSERT_TRUE(net::write_full(server_fd, frame, sizeof(frame), "test").ok());
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 2s, [&] { return closed; }));
  EXPECT_EQ(reason.code(), StatusCode::kCorruption);
  lock.unlock();
  EXPECT_TRUE((*conn)->wait_closed(5s));
  ::close(server_fd);
  (*listener)->close();
}

}  // namespace
}  // namespace tandem::rpc
