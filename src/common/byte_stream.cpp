// The plain socket stream (see byte_stream.h).
#include "common/byte_stream.h"

#include <poll.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

namespace tandem::net {

StatusOr<size_t> PlainStream::read_some(void* data, size_t size, int timeout_ms) {
  while (true) {
    if (timeout_ms >= 0) {
      pollfd p{fd_, POLLIN, 0};
      const int rc = ::poll(&p, 1, timeout_ms);
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return Status::Unavailable(std::string("poll: ") + std::strerror(errno));
      if (rc == 0) return Status::DeadlineExceeded("timed out");
    }
    const ssize_t n = ::recv(fd_, data, size, 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    // EAGAIN: SO_RCVTIMEO (set_timeout) ran out, or poll's readiness was spurious.
    if (errno == EAGAIN) {
      if (timeout_ms < 0) return Status::DeadlineExceeded("timed out");
      continue;
    }
    return Status::Unavailable(std::string("lost: ") + std::strerror(errno));
  }
}

void PlainStream::set_timeout(int timeout_ms) {
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

}  // namespace tandem::net
