// Test peers shared by the cluster-plane tests (the cluster key's and TLS's): an echo server on the
// request plane, a message's round trip to it, and reading a socket until its peer closes it.
#pragma once

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/socket.h"
#include "rpc/connection.h"

namespace tandem::security {

// An echo server on the request plane: every message is sent back on its connection.
class EchoServer {
 public:
  EchoServer() {
    listener_ = net::Listener::bind("127.0.0.1", 0).value();
    listener_->start([this](int fd, std::string peer) {
      auto conn = rpc::Connection::adopt(fd, peer, "test");
      {
        std::lock_guard<std::mutex> lock(mu_);
        conns_.push_back(conn);
      }
      std::weak_ptr<rpc::Connection> weak = conn;
      conn->start(
          [this, weak](rpc::pb::Envelope& message) {
            handled_.fetch_add(1);
            if (auto c = weak.lock()) c->send(message);
          },
          [](const Status&) {});
    });
  }
  ~EchoServer() {
    listener_->close();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : conns_) c->close();
    for (auto& c : conns_) c->wait_closed(std::chrono::seconds(2));
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(listener_->port()); }
  int handled() const { return handled_.load(); }

 private:
  std::unique_ptr<net::Listener> listener_;
  std::mutex mu_;
  std::vector<std::shared_ptr<rpc::Connection>> conns_;
  std::atomic<int> handled_{0};
};

inline rpc::pb::Envelope abort_message(const std::string& id) {
  rpc::pb::Envelope e;
  e.mutable_abort()->set_request_id(id);
  return e;
}

// A message's round trip on a dialed connection: true when the echo came back.
inline bool round_trip(const std::string& address) {
  auto conn = rpc::Connection::dial(address, 2000);
  if (!conn.ok()) return false;
  std::mutex mu;
  std::string echoed;
  (*conn)->start(
      [&](rpc::pb::Envelope& m) {
        std::lock_guard<std::mutex> lock(mu);
        echoed = m.abort().request_id();
      },
      [](const Status&) {});
  (*conn)->send(abort_message("r1"));
  bool ok = false;
  for (int i = 0; i < 200 && !ok; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::lock_guard<std::mutex> lock(mu);
    ok = echoed == "r1";
  }
  (*conn)->close();
  (*conn)->wait_closed(std::chrono::seconds(2));
  return ok;
}

// Reads until the peer closes (true) or `seconds` pass; *bytes gets what arrived.
inline bool closed_by_peer(int fd, std::string* bytes, int seconds = 3) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buffer[256];
  while (true) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
    bytes->append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace tandem::security
