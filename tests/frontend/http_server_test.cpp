// HttpServer's bounds on a client that reads its response slowly or not at all (issue 20): a write
// not done within send_timeout_ms closes the connection, and so does a producer running more than
// max_send_buffer_bytes ahead of the socket; both report the client gone (which aborts its request)
// and name the limit. A client that reads gets every byte, however far the producer ran ahead
// within the limit.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "frontend/http.h"

namespace tandem::frontend {
namespace {

using Clock = std::chrono::steady_clock;

// A server on loopback whose one route streams `total_bytes` at once, in 16 KiB pieces (or, `whole`,
// answers them as one response).
class StreamingServer {
 public:
  StreamingServer(HttpServerOptions options, size_t total_bytes, bool whole = false) {
    options.host = "127.0.0.1";
    options.port = 0;
    HttpServerHooks hooks;
    hooks.refusal = [](int) { return std::make_pair(std::string("{}"), std::string("application/json")); };
    hooks.on_limit = [this](const char* reason) {
      std::lock_guard<std::mutex> lock(mu_);
      limits_.push_back(reason);
    };
    server_ = std::make_unique<HttpServer>(
        options,
        [this, total_bytes, whole](std::shared_ptr<HttpExchange> ex) {
          ex->on_client_gone([this] { ++gone_; });
          if (whole) return ex->respond(200, "text/plain", std::string(total_bytes, 'y'), {});
          ex->start_stream(200, "text/event-stream", {});
          const std::string piece(16 << 10, 'x');
          for (size_t sent = 0; sent < total_bytes; sent += piece.size()) ex->write(piece);
          ex->end();
        },
        std::move(hooks));
    thread_ = std::thread([this] { server_->run(); });
  }
  ~StreamingServer() {
    server_->stop();
    thread_.join();
  }
  int port() const { return server_->port(); }
  int gone() const { return gone_.load(); }
  std::vector<std::string> limits() {
    std::lock_guard<std::mutex> lock(mu_);
    return limits_;
  }

 private:
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  std::atomic<int> gone_{0};
  std::mutex mu_;
  std::vector<std::string> limits_;
};

// A client with a 4 KiB receive buffer (so the server's writes block as soon as it stops reading).
int connect_and_request(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int rcvbuf = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  const std::string request = "GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until the server closes (or `timeout_ms` passes); returns the bytes read.
size_t read_all(int fd, int timeout_ms, bool* closed) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t total = 0;
  char buf[65536];
  *closed = false;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      *closed = true;
      break;
    }
    total += static_cast<size_t>(n);
  }
  return total;
}

template <typename F>
bool eventually(F predicate, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return predicate();
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v) {
    if (x == s) return true;
  }
  return false;
}

TEST(HttpServerSendBounds, ClientThatStopsReading_IsDroppedAfterTheSendTimeout) {
  HttpServerOptions options;
  options.send_timeout_ms = 300;
  options.max_send_buffer_bytes = 256u << 20;  // only the timeout can end it
  StreamingServer server(options, 64u << 20);  // far more than the kernel's socket buffers hold
  const auto start = Clock::now();
  int fd = connect_and_request(server.port());
  ASSERT_GE(fd, 0);
  // Before the fix the write waited for the client forever (and the request ran to its end).
  EXPECT_TRUE(eventually([&] { return server.gone() == 1; }, 10000));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  EXPECT_TRUE(contains(server.limits(), "send_timeout"));
  bool closed = false;
  read_all(fd, 10000, &closed);
  EXPECT_TRUE(closed) << "the server kept the connection of a client that stopped reading";
  ::close(fd);
}

TEST(HttpServerSendBounds, ProducerFarAheadOfTheSocket_IsDroppedAtTheBufferLimit) {
  HttpServerOptions options;
  options.send_timeout_ms = 60000;             // only the buffer limit can end it
  options.max_send_buffer_bytes = 1u << 20;
  StreamingServer server(options, 8u << 20);  // written at once: 8 MiB queued for the socket
  int fd = connect_and_request(server.port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(eventually([&] { return server.gone() == 1; }, 5000));
  EXPECT_TRUE(contains(server.limits(), "send_buffer_full"));
  bool closed = false;
  const size_t got = read_all(fd, 10000, &closed);
  EXPECT_TRUE(closed);
  EXPECT_LT(got, size_t{8} << 20);
  ::close(fd);
}

// The timeout is on progress, not on the whole write: a 1 MiB reply read 4 KiB at a time every 10 ms
// takes seconds, far past the timeout, and arrives whole.
TEST(HttpServerSendBounds, SlowButReadingClient_GetsALargeReplyTakingLongerThanTheTimeout) {
  HttpServerOptions options;
  options.send_timeout_ms = 300;
  StreamingServer server(options, 1u << 20, /*whole=*/true);
  int fd = connect_and_request(server.port());
  ASSERT_GE(fd, 0);
  const auto start = Clock::now();
  size_t got = 0;
  char buf[4096];
  bool closed = false;
  while (Clock::now() - start < std::chrono::seconds(60)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      closed = n == 0;
      break;
    }
    got += static_cast<size_t>(n);
    if (got > (1u << 20)) break;  // the body and the response head
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GT(got, size_t{1} << 20) << (closed ? "closed early" : "stalled");
  EXPECT_GT(Clock::now() - start, std::chrono::milliseconds(options.send_timeout_ms));
  EXPECT_EQ(server.gone(), 0);
  EXPECT_TRUE(server.limits().empty());
  ::close(fd);
}

TEST(HttpServerSendBounds, ClientThatReads_GetsEveryByteWithinTheLimits) {
  HttpServerOptions options;
  options.send_timeout_ms = 2000;
  options.max_send_buffer_bytes = 8u << 20;
  StreamingServer server(options, 4u << 20);
  int fd = connect_and_request(server.port());
  ASSERT_GE(fd, 0);
  bool closed = false;
  const size_t got = read_all(fd, 20000, &closed);
  EXPECT_TRUE(closed);
  EXPECT_GT(got, size_t{4} << 20);  // the body and the response head
  EXPECT_EQ(server.gone(), 0);
  EXPECT_TRUE(server.limits().empty());
  ::close(fd);
}

}  // namespace
}  // namespace tandem::frontend
