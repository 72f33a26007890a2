// A blocking byte stream over a connected socket: what the request plane (rpc::Connection) and the
// TCP KV transfer plane read and write through, so that the same code runs over plain TCP
// (PlainStream, here) or TLS (security/tls_stream.h).
//
// Ownership: a stream borrows its socket; whoever made the socket closes it, after the stream is gone.
// Thread-safety: one thread may read while another writes (the request plane's reader and writer
// threads); two readers, or two writers, at once are not allowed. shutdown() may be called from any
// thread to wake both.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string>

#include "common/socket.h"
#include "common/status.h"

namespace tandem::net {

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  // Exactly `size` bytes; Unavailable naming the peer on end of stream, error or timeout.
  virtual Status read_full(void* data, size_t size) = 0;
  virtual Status write_full(const void* data, size_t size) = 0;
  // Up to `size` bytes, waiting at most timeout_ms (< 0: no limit) for the first: the count, 0 at the
  // end of the stream, DeadlineExceeded when nothing came in time. For handshakes with a deadline.
  virtual StatusOr<size_t> read_some(void* data, size_t size, int timeout_ms) = 0;
  // Bounds each later wait of read_full and write_full (0: none), as SO_RCVTIMEO/SO_SNDTIMEO do.
  virtual void set_timeout(int timeout_ms) = 0;
  // Wakes a thread blocked in a read or write (which then fails); the socket stays open.
  void shutdown() { ::shutdown(fd_, SHUT_RDWR); }

  int fd() const { return fd_; }
  const std::string& peer() const { return peer_; }

 protected:
  ByteStream(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}
  const int fd_;
  const std::string peer_;
};

// The socket itself: read_full/write_full are net::read_full/write_full, nothing added.
class PlainStream final : public ByteStream {
 public:
  PlainStream(int fd, std::string peer) : ByteStream(fd, std::move(peer)) {}
  Status read_full(void* data, size_t size) override { return net::read_full(fd_, data, size, peer_); }
  Status write_full(const void* data, size_t size) override { return net::write_full(fd_, data, size, peer_); }
  StatusOr<size_t> read_some(void* data, size_t size, int timeout_ms) override;
  void set_timeout(int timeout_ms) override;
};

}  // namespace tandem::net
