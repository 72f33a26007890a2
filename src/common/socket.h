// Small blocking TCP helpers shared by the request plane (rpc) and the TCP KV transfer backend:
// dialing with a deadline, listening, and full reads/writes that retry on EINTR and short counts.
// Thread-safety: free functions over file descriptors the caller owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace tandem::net {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::string to_string() const { return host + ":" + std::to_string(port); }
};
// "host:port". InvalidArgument naming the text otherwise.
StatusOr<Endpoint> parse_endpoint(const std::string& text);

// A connected TCP socket (TCP_NODELAY set) within timeout_ms; Unavailable naming the address.
StatusOr<int> dial(const std::string& address, int timeout_ms);
// Reads exactly `size` bytes. Unavailable on EOF or error (message names `peer`).
Status read_full(int fd, void* data, size_t size, const std::string& peer);
Status write_full(int fd, const void* data, size_t size, const std::string& peer);
// "ip:port" of the socket's peer.
std::string peer_name(int fd);

// Accepts TCP connections on one port on its own thread; each accepted socket (TCP_NODELAY set) is
// handed to on_accept, which owns it from there.
// Thread-safety: close() may be called from any thread; on_accept runs on the accept thread.
class Listener {
 public:
  // Binds host:port (port 0 = ephemeral). Unavailable naming the address if it cannot.
  static StatusOr<std::unique_ptr<Listener>> bind(const std::string& host, uint16_t port);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  uint16_t port() const { return port_; }
  // REQUIRES: called once.
  void start(std::function<void(int fd, std::string peer)> on_accept);
  // Stops accepting and joins the accept thread; idempotent. REQUIRES: not called from on_accept.
  void close();

 private:
  Listener(int fd, uint16_t port);
  int fd_;
  uint16_t port_;
  struct Thread;
  std::unique_ptr<Thread> thread_;
};

}  // namespace tandem::net
