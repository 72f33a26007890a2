// The request plane's transport: length-prefixed protobuf Envelopes over one persistent TCP
// connection, with many requests multiplexed on it (each message names its request id).
//
// A Connection owns its socket and two threads: a reader that decodes frames and hands each to the
// message handler, and a writer that drains a queue, so send() never blocks the caller (an engine
// callback may send). When the peer goes away the close handler runs once, at once, with the reason;
// owners fail the requests that were riding on the connection from there (DESIGN.md §2 failure rules).
//
// Ownership: create with dial() or adopt(), start() once, close() when done. The threads keep the
// Connection alive until they exit, and drop both handlers when it closes, so a handler may capture
// its owner without a leak.
// Thread-safety: every method may be called from any thread, handlers included.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/byte_stream.h"
#include "common/status.h"
#include "rpc/messages.pb.h"

namespace tandem::rpc {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // Runs on the reader thread for each message, in arrival order.
  using MessageHandler = std::function<void(pb::Envelope& message)>;
  // Runs once, on the reader thread, when the connection ends for any reason.
  using CloseHandler = std::function<void(const Status& reason)>;

  // Connects to "host:port" within timeout_ms, then secures the connection as the process is set up to:
  // TLS with cluster certificates, the cluster key's challenge-response with a key
  // (security/cluster_channel.h; `plane` names the port in its log line). Unavailable with the address
  // and the reason on failure.
  static StatusOr<std::shared_ptr<Connection>> dial(const std::string& address, int timeout_ms,
                                                    const char* plane = "request");
  // Takes ownership of an accepted socket. The reader runs the acceptor's side of the TLS and key
  // handshakes (when the process has them) before it reads any message, and the writer sends nothing
  // until they have passed; a peer that fails is closed (the close handler runs) without a message
  // handled or sent.
  static std::shared_ptr<Connection> adopt(int fd, std::string peer, const char* plane = "request");

  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // REQUIRES: called once.
  void start(MessageHandler on_message, CloseHandler on_close);
  // Queues `message` for sending; false (and nothing sent) once the connection is closed.
  bool send(const pb::Envelope& message);
  // Ends the connection; idempotent. The close handler runs with an Aborted status. Frames still
  // queued are dropped: call flush() first for a last message that must arrive.
  void close();
  // Waits up to `timeout` until every frame queued so far is written to the socket; false on timeout
  // or when the connection ended first.
  bool flush(std::chrono::milliseconds timeout);
  // After close(), or once the peer is gone: waits up to `timeout` until the reader thread has run the
  // close handler and dropped both handlers; true when it has (or start() was never called). Call it
  // before tearing down what the handlers or the reader touch (at exit: the logger), since the threads
  // are detached and would otherwise still be finishing.
  bool wait_closed(std::chrono::milliseconds timeout);
  bool is_open() const;
  // "127.0.0.1:4567", for logs and errors.
  const std::string& peer() const { return peer_; }

  // Frames larger than this are refused as corrupt (the largest message is a prompt's token ids).
  static constexpr uint32_t kMaxFrameBytes = 256u << 20;

 private:
  struct State;
  Connection(int fd, std::string peer, const char* plane, std::unique_ptr<net::ByteStream> stream);
  void reader_loop();
  void writer_loop();

  const int fd_;
  const std::string peer_;
  const char* const plane_;  // nullptr: dialed (secured already); else the acceptor's plane
  std::unique_ptr<State> state_;
  // What the threads read and write through (plain or TLS over fd_). Dialed: set at once; accepted: set
  // by the reader once the handshakes pass, before `authenticated` lets the writer use it.
  std::unique_ptr<net::ByteStream> stream_;
};

}  // namespace tandem::rpc
