// Connections this worker dialed to other workers, one per address, reused while open: a decode worker
// dials its prefill workers (RemotePrefill out, RemotePrefillResult back); a prefill worker fed by the
// queue dials the decode worker named in the message to answer it.
//
// Ownership: held by shared_ptr; the connections' handlers hold it weakly.
// Thread-safety: every method from any thread; `mu_` guards the address table only (dialing and the
// handlers run outside it).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rpc/connection.h"

namespace tandem::worker {

class PeerPool : public std::enable_shared_from_this<PeerPool> {
 public:
  // Runs for each message a peer sends (on that connection's reader thread).
  using MessageHandler = std::function<void(rpc::pb::Envelope& env)>;
  // Runs once when a connection of the pool ends: `conn` identifies it (compare, never dereference).
  using CloseHandler = std::function<void(const void* conn, const std::string& address, const Status& reason)>;

  PeerPool(int dial_timeout_ms, MessageHandler on_message, CloseHandler on_close);

  // The open connection to `address`, dialed now when there is none; null with `*error` set when it
  // cannot be reached. Two callers racing for one address get the same connection.
  std::shared_ptr<rpc::Connection> get(const std::string& address, Status* error);
  // Every connection of the pool (shutdown closes them).
  std::vector<std::shared_ptr<rpc::Connection>> all() const;

 private:
  const int dial_timeout_ms_;
  const MessageHandler on_message_;
  const CloseHandler on_close_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<rpc::Connection>> peers_;  // GUARDED_BY(mu_): by address
};

}  // namespace tandem::worker
