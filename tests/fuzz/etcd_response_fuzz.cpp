// Fuzz target: the etcd client's reading of the JSON gateway's answers (HTTP head, chunked bodies,
// JSON, base64 keys and values, watch streams). A fake etcd on loopback answers every call with the
// input after its first byte, which picks the call. Errors must be a Status, never a crash or a hang.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "cluster/etcd.h"
#include "common/socket.h"

namespace {
std::mutex answer_mu;
std::string answer;  // GUARDED_BY(answer_mu)

// Reads the client's request (head and Content-Length body), answers, then waits for the client to close.
void serve(int fd) {
  std::string request;
  char buffer[4096];
  while (true) {
    size_t head_end = request.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      size_t at = request.find("Content-Length: ");
      size_t length = at == std::string::npos ? 0 : std::strtoul(request.c_str() + at + 16, nullptr, 10);
      if (request.size() >= head_end + 4 + length) break;
    }
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    request.append(buffer, static_cast<size_t>(n));
  }
  std::string reply;
  {
    std::lock_guard<std::mutex> lock(answer_mu);
    reply = answer;
  }
  (void)tandem::net::write_full(fd, reply.data(), reply.size(), "client");
  shutdown(fd, SHUT_WR);
  while (recv(fd, buffer, sizeof(buffer), 0) > 0) {
  }
  close(fd);
}

tandem::cluster::EtcdClient& client() {
  static std::unique_ptr<tandem::net::Listener> listener;
  static const auto c = [] {
    signal(SIGPIPE, SIG_IGN);
    listener = tandem::net::Listener::bind("127.0.0.1", 0).value();
    listener->start([](int fd, std::string) { serve(fd); });
    auto endpoints = tandem::cluster::parse_etcd_url("etcd://127.0.0.1:" + std::to_string(listener->port()));
    return std::make_unique<tandem::cluster::EtcdClient>(*endpoints, 2000);
  }();
  return *c;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto& etcd = client();
  {
    std::lock_guard<std::mutex> lock(answer_mu);
    answer.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  }
  switch (data[0] % 5) {
    case 0: (void)etcd.get_prefix("/tandem/default/"); break;
    case 1: (void)etcd.grant_lease(10); break;
    case 2: (void)etcd.keep_alive(7); break;
    case 3: (void)etcd.put("/tandem/default/k", "v", 7); break;
    case 4: {
      std::atomic<bool> cancel{false};
      (void)etcd.watch_prefix("/tandem/default/", 3, [](const std::vector<tandem::cluster::WatchEvent>&) {}, cancel);
      break;
    }
  }
  // base64 alone, both ways.
  std::string text(reinterpret_cast<const char*>(data), size);
  auto decoded = tandem::cluster::base64_decode(text);
  auto round = tandem::cluster::base64_decode(tandem::cluster::base64_encode(text));
  if (!round.ok() || *round != text) __builtin_trap();
  (void)decoded;
  return 0;
}
