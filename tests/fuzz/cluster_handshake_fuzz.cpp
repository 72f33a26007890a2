// Fuzz target: the cluster key's handshake frames (security/cluster_auth.h). The input is parsed as
// each frame type, then played into a socket pair as the peer's bytes: first byte even, against the
// acceptor (the input is the dialer's hello and response); odd, against the dialer (the input is the
// acceptor's challenge). Every input must end in a refusal or, never by chance, a pass; no crash, no
// hang past the handshake's own timeout.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/socket.h"
#include "security/cluster_auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool once = [] {
    signal(SIGPIPE, SIG_IGN);  // the side under test may write after the input's end has closed
    return true;
  }();
  (void)once;
  using namespace tandem::security;
  const std::span<const uint8_t> input(data, size);
  for (FrameType type : {FrameType::kHello, FrameType::kChallenge, FrameType::kResponse}) {
    auto frame = parse_frame(input, type);
    if (frame.ok() && serialize_frame(*frame) != std::string(reinterpret_cast<const char*>(data), size)) __builtin_trap();
  }
  if (size == 0) return 0;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) __builtin_trap();
  // The whole input is written and the write side shut before the handshake runs, so every read ends
  // at once (end of input) rather than at the timeout. A socket pair buffers far more than a handshake.
  (void)tandem::net::write_full(fds[1], data + 1, size - 1, "fuzz");
  shutdown(fds[1], SHUT_WR);
  const std::string key = "fuzzing key, sixteen bytes or more";
  tandem::Status result = data[0] % 2 == 0 ? authenticate_acceptor(fds[0], {key}, "fuzz", "fuzz", 1000)
                                           : authenticate_dialer(fds[0], {key}, "fuzz", "fuzz", 1000);
  // Passing needs an HMAC under the key over a fresh random nonce: a fuzzer input cannot forge one.
  if (result.ok()) __builtin_trap();
  close(fds[0]);
  close(fds[1]);
  return 0;
}
