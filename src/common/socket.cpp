// Blocking TCP helpers (see socket.h).
#include "common/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

namespace tandem::net {

StatusOr<Endpoint> parse_endpoint(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Status::InvalidArgument("'" + text + "' is not host:port");
  }
  Endpoint ep;
  ep.host = text.substr(0, colon);
  try {
    size_t used = 0;
    int port = std::stoi(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1 || port < 0 || port > 65535) throw std::out_of_range("port");
    ep.port = static_cast<uint16_t>(port);
  } catch (const std::exception&) {
    return Status::InvalidArgument("'" + text + "' has no valid port");
  }
  return ep;
}

namespace {

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

StatusOr<int> dial(const std::string& address, int timeout_ms) {
  auto ep = parse_endpoint(address);
  if (!ep.ok()) return ep.status();
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(ep->host.c_str(), std::to_string(ep->port).c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    return Status::Unavailable("cannot resolve " + address + ": " + gai_strerror(rc));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(result);
    return Status::Unavailable(std::string("socket: ") + std::strerror(errno));
  }
  // Non-blocking connect, so the dial has a deadline (a dead host must not hang a request).
  int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  rc = connect(fd, result->ai_addr, result->ai_addrlen);
  freeaddrinfo(result);
  if (rc != 0 && errno != EINPROGRESS) {
    std::string why = std::strerror(errno);
    ::close(fd);
    return Status::Unavailable("cannot connect to " + address + ": " + why);
  }
  if (rc != 0) {
    pollfd p{fd, POLLOUT, 0};
    rc = poll(&p, 1, timeout_ms);
    int err = 0;
    socklen_t len = sizeof(err);
    if (rc == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (rc != 1 || err != 0) {
      ::close(fd);
      return Status::Unavailable("cannot connect to " + address + ": " +
                                 (rc == 0 ? std::string("timed out after ") + std::to_string(timeout_ms) + " ms"
                                          : std::string(std::strerror(err ? err : errno))));
    }
  }
  fcntl(fd, F_SETFL, flags);
  set_nodelay(fd);
  return fd;
}

Status read_full(int fd, void* data, size_t size, const std::string& peer) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = ::recv(fd, p, size, 0);
    if (n > 0) {
      p += n;
      size -= static_cast<size_t>(n);
    } else if (n == 0) {
      return Status::Unavailable("connection to " + peer + " closed by peer");
    } else if (errno != EINTR) {
      return Status::Unavailable("connection to " + peer + " lost: " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

Status write_full(int fd, const void* data, size_t size, const std::string& peer) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n >= 0) {
      p += n;
      size -= static_cast<size_t>(n);
    } else if (errno != EINTR) {
      return Status::Unavailable("connection to " + peer + " lost: " + std::strerror(errno));
    }
  }
  return Status::Ok();
}

std::string peer_name(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
  return std::string(ip) + ":" + std::to_string(ntohs(addr.sin_port));
}

struct Listener::Thread {
  std::thread thread;
  std::atomic<bool> closed{false};
};

Listener::Listener(int fd, uint16_t port) : fd_(fd), port_(port), thread_(std::make_unique<Thread>()) {}

StatusOr<std::unique_ptr<Listener>> Listener::bind(const std::string& host, uint16_t port) {
  std::string address = host + ":" + std::to_string(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Unavailable(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (host.empty() || host == "0.0.0.0") {
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (host == "localhost") {
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  } else if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    ::close(fd);
    return Status::InvalidArgument("cannot listen on " + address + ": not an IPv4 address");
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 512) != 0) {
    std::string why = std::strerror(errno);
    ::close(fd);
    return Status::Unavailable("cannot listen on " + address + ": " + why);
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<Listener>(new Listener(fd, ntohs(addr.sin_port)));
}

Listener::~Listener() { close(); }

void Listener::start(std::function<void(int, std::string)> on_accept) {
  thread_->thread = std::thread([this, on_accept = std::move(on_accept)] {
    while (!thread_->closed.load()) {
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (thread_->closed.load()) break;
        // EMFILE and friends: back off instead of spinning.
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      set_nodelay(fd);
      on_accept(fd, peer_name(fd));
    }
  });
}

void Listener::close() {
  if (thread_->closed.exchange(true)) return;
  // shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
  ::shutdown(fd_, SHUT_RDWR);
  if (thread_->thread.joinable()) thread_->thread.join();
  ::close(fd_);
}

}  // namespace tandem::net
