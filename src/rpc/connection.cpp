// Framed protobuf messages over TCP (see connection.h).
#include "rpc/connection.h"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "common/socket.h"
#include "security/cluster_channel.h"

namespace tandem::rpc {

struct Connection::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;  // GUARDED_BY(mu): frames ready to write (length prefix included)
  bool closed = false;            // GUARDED_BY(mu)
  bool writing = false;           // GUARDED_BY(mu): the writer holds frames taken from `queue`
  bool started = false;
  bool authenticated = false;     // GUARDED_BY(mu): the handshake passed (or none is needed); the writer waits for it
  bool reader_done = false;       // GUARDED_BY(mu): the close handler has run and both handlers are dropped
  Status close_reason;            // GUARDED_BY(mu): the first reason the connection ended
  MessageHandler on_message;
  CloseHandler on_close;
};

Connection::Connection(int fd, std::string peer, const char* plane, std::unique_ptr<net::ByteStream> stream)
    : fd_(fd), peer_(std::move(peer)), plane_(plane), state_(std::make_unique<State>()), stream_(std::move(stream)) {
  state_->authenticated = plane_ == nullptr;
}

Connection::~Connection() {
  stream_.reset();  // borrows the socket
  ::close(fd_);
}

StatusOr<std::shared_ptr<Connection>> Connection::dial(const std::string& address, int timeout_ms, const char* plane) {
  auto fd = net::dial(address, timeout_ms);
  if (!fd.ok()) return fd.status();
  auto stream = security::secure_dialed(*fd, plane, address);
  if (!stream.ok()) {
    ::close(*fd);
    return stream.status();
  }
  return std::shared_ptr<Connection>(new Connection(*fd, address, nullptr, std::move(*stream)));
}

std::shared_ptr<Connection> Connection::adopt(int fd, std::string peer, const char* plane) {
  return std::shared_ptr<Connection>(new Connection(fd, std::move(peer), plane, nullptr));
}

void Connection::start(MessageHandler on_message, CloseHandler on_close) {
  state_->on_message = std::move(on_message);
  state_->on_close = std::move(on_close);
  state_->started = true;
  // Both threads hold a reference, so the socket stays valid until both have exited.
  std::thread([self = shared_from_this()] { self->reader_loop(); }).detach();
  std::thread([self = shared_from_this()] { self->writer_loop(); }).detach();
}

bool Connection::send(const pb::Envelope& message) {
  std::string frame(4, '\0');
  if (!message.AppendToString(&frame)) return false;
  uint32_t length = htonl(static_cast<uint32_t>(frame.size() - 4));
  std::memcpy(frame.data(), &length, 4);
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->closed) return false;
    state_->queue.push_back(std::move(frame));
  }
  state_->cv.notify_all();  // the writer, and not only a flush() that waits on the same variable
  return true;
}

void Connection::close() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->closed) return;
    state_->closed = true;
    state_->close_reason = Status::Aborted("connection to " + peer_ + " closed locally");
  }
  state_->cv.notify_all();
  // Wakes the reader blocked in recv(); it runs the close handler.
  ::shutdown(fd_, SHUT_RDWR);
}

bool Connection::flush(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  return state_->cv.wait_for(lock, timeout, [&] { return state_->closed || (state_->queue.empty() && !state_->writing); }) &&
         !state_->closed;
}

bool Connection::is_open() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return !state_->closed;
}

void Connection::reader_loop() {
  Status status;
  if (plane_ != nullptr) {
    auto stream = security::secure_accepted(fd_, plane_, peer_);
    status = stream.status();
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(state_->mu);
      stream_ = std::move(*stream);
      state_->authenticated = true;
    }
    state_->cv.notify_all();
  }
  // Bytes are read as they come, as many as the socket has (up to kReadBytes a call), and every whole
  // frame in them is handled before the next read: a burst of small token messages costs one recv()
  // instead of two per frame. [begin, end) of `buffer` holds what is read and not yet handled. It grows
  // with the bytes that arrive, never with a length prefix alone (tests/fuzz/rpc_frames_fuzz).
  constexpr size_t kReadBytes = 64 << 10, kMaxReadBytes = 1 << 20;
  std::string buffer;
  size_t begin = 0, end = 0;
  pb::Envelope message;
  while (status.ok()) {
    size_t missing = 0;  // bytes still to come of a frame whose length is known
    if (end - begin >= 4) {
      uint32_t length = 0;
      std::memcpy(&length, buffer.data() + begin, 4);
      length = ntohl(length);
      if (length > kMaxFrameBytes) {
        status = Status::Corruption("frame of " + std::to_string(length) + " bytes from " + peer_ + " is over the limit");
        break;
      }
      if (end - begin >= 4 + static_cast<size_t>(length)) {
        if (!message.ParseFromArray(buffer.data() + begin + 4, static_cast<int>(length))) {
          status = Status::Corruption("malformed message from " + peer_);
          break;
        }
        begin += 4 + static_cast<size_t>(length);
        state_->on_message(message);
        continue;
      }
      missing = 4 + static_cast<size_t>(length) - (end - begin);
    }
    // Keep the partial frame at the front, then read more after it.
    if (begin > 0) {
      std::memmove(buffer.data(), buffer.data() + begin, end - begin);
      end -= begin;
      begin = 0;
    }
    const size_t want = std::clamp(missing, kReadBytes, kMaxReadBytes);  // a large frame: up to 1 MiB a call
    if (buffer.size() < end + want) buffer.resize(end + want);
    auto got = stream_->read_some(buffer.data() + end, want, -1);
    if (!got.ok()) {
      status = Status::Unavailable("connection to " + peer_ + " lost: " + got.status().message());
    } else if (*got == 0) {
      status = Status::Unavailable("connection to " + peer_ + " closed by peer");
    } else {
      end += *got;
    }
  }
  Status reason;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->closed) {
      state_->closed = true;
      state_->close_reason = status;
    }
    reason = state_->close_reason;
  }
  state_->cv.notify_all();
  ::shutdown(fd_, SHUT_RDWR);
  spdlog::debug("event=rpc_connection_closed peer={} reason=\"{}\"", peer_, reason.to_string());
  state_->on_close(reason);
  // Handlers may hold their owner; dropping them here breaks the cycle.
  state_->on_message = nullptr;
  state_->on_close = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->reader_done = true;
  }
  state_->cv.notify_all();
}

bool Connection::wait_closed(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  if (!state_->started) return true;
  return state_->cv.wait_for(lock, timeout, [&] { return state_->reader_done; });
}

void Connection::writer_loop() {
  std::deque<std::string> batch;
  std::string joined;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(state_->mu);
      state_->cv.wait(lock, [&] { return state_->closed || (state_->authenticated && !state_->queue.empty()); });
      if (state_->closed) return;
      batch.swap(state_->queue);
      state_->writing = true;
    }
    // One write for everything queued: many small token messages become one syscall.
    joined.clear();
    for (auto& frame : batch) joined += frame;
    batch.clear();
    Status status = stream_->write_full(joined.data(), joined.size());
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->writing = false;
    }
    state_->cv.notify_all();  // flush() waits for this
    if (!status.ok()) {
      ::shutdown(fd_, SHUT_RDWR);  // the reader sees it and runs the close handler
      return;
    }
  }
}

}  // namespace tandem::rpc
