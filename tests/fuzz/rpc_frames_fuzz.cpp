// Fuzz target: the request plane's framing (4-byte length + protobuf Envelope) as a worker or a
// frontend reads it: the input is written into one end of a socket pair whose other end a real
// rpc::Connection reads; every frame must end in a message or close the connection, never a crash.
// The Envelope parse alone runs on the input as well.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "common/socket.h"
#include "rpc/connection.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool once = [] {
    signal(SIGPIPE, SIG_IGN);  // the reader may close before all the input is written
    return true;
  }();
  (void)once;
  {
    tandem::rpc::pb::Envelope envelope;
    if (envelope.ParseFromArray(data, static_cast<int>(size))) (void)envelope.SerializeAsString();
  }
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
  auto connection = tandem::rpc::Connection::adopt(fds[0], "fuzz");
  std::atomic<int> messages{0};
  connection->start(
      [&messages](tandem::rpc::pb::Envelope& message) {
        messages.fetch_add(1);
        (void)message.ByteSizeLong();
        (void)message.msg_case();
      },
      [](const tandem::Status&) {});
  (void)tandem::net::write_full(fds[1], data, size, "fuzz");
  shutdown(fds[1], SHUT_WR);
  if (!connection->wait_closed(std::chrono::seconds(10))) __builtin_trap();
  // Both threads hold the connection until they exit; wait for that, so the leak check after this input
  // does not race a thread that is still letting go (and a thread that never ends is a finding).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (connection.use_count() > 1) {
    if (std::chrono::steady_clock::now() > deadline) __builtin_trap();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  close(fds[1]);
  return 0;
}
