// Fuzz target: the TCP KV transfer receiver's frames (push TKV1, device-path claim and release) as a
// decode worker reads them from a peer. One backend listens on loopback over a small host KV memory
// that expects transfer "fuzz" into blocks 0-3; each input is sent on a fresh connection, and the
// receiver must answer or drop it, never crash or write outside the expected blocks.
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/socket.h"
#include "transfer/transfer.h"
#include "transfer/transport_choice.h"

namespace {
tandem::transfer::TransferBackend& backend() {
  static const auto b = [] {
    signal(SIGPIPE, SIG_IGN);  // the receiver may drop the connection before all the input is written
    return tandem::transfer::create_tcp_backend(tandem::transfer::create_host_kv_memory(2, 8, 64), "127.0.0.1", 0);
  }();
  return *b;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& kv = backend();
  kv.expect("fuzz", {0, 1, 2, 3});
  static const std::string address = tandem::transfer::parse_peer_address(kv.address()).tcp;
  auto fd = tandem::net::dial(address, 2000);
  if (!fd.ok()) __builtin_trap();
  timeval tv{10, 0};
  setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)tandem::net::write_full(*fd, data, size, "fuzz");
  shutdown(*fd, SHUT_WR);
  // The receiver closes its end once the input is used up (or refused): read acks until then.
  char buffer[4096];
  while (true) {
    ssize_t n = recv(*fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) __builtin_trap();  // the receiver hangs on a finished input
      break;
    }
  }
  close(*fd);
  kv.forget("fuzz");
  return 0;
}
