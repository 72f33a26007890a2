// The decode side of a remote prefill (DESIGN.md §2): reserve KV blocks for the prompt, ask a prefill
// worker (directly, or through the prefill queue) to prefill and push the prompt's KV into them, wait
// for its answer, then decode from that KV; on any failure on the way, prefill locally instead.
//
// Ownership: held by shared_ptr; each remote prefill runs on a detached thread of its own that holds
// it (and through it the Core), so the request plane's reader is never blocked on a prefill.
// Thread-safety: every method from any thread. `mu_` guards the table of prefills waiting for an
// answer, and `cv_` wakes their threads; no call out is made under `mu_`.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "rpc/connection.h"
#include "worker/core.h"
#include "worker/outputs.h"
#include "worker/peers.h"

namespace tandem::worker {

class RemotePrefillClient : public std::enable_shared_from_this<RemotePrefillClient> {
 public:
  // Also makes the pool of connections to peers, whose answers and losses come back here.
  static std::shared_ptr<RemotePrefillClient> create(std::shared_ptr<Core> core, std::shared_ptr<Outputs> outputs);

  // Starts the remote prefill of `request` (its owner already set in Outputs) on a thread of its own:
  // on the prefill worker at `address`, or through the queue when `address` is empty; a prefill not
  // answered within `timeout_ms` falls back to a local one.
  void start(engine::Request request, const std::string& address, int timeout_ms);
  // A prefill worker's answer, on the connection we dialed it on or (queue) one it dialed us on.
  void on_result(const rpc::pb::RemotePrefillResult& result);
  // True when `request_id` was waiting on a remote prefill: it ends aborted (its blocks released, the
  // prefill worker told). False otherwise: the caller aborts it in the engine.
  bool abort(const std::string& request_id);
  // No remote prefill is waiting for an answer.
  bool idle() const;

  const std::shared_ptr<PeerPool>& peers() const { return peers_; }

 private:
  // A remote prefill waiting for its answer. GUARDED_BY(mu_) while in `pending_`.
  struct Pending {
    bool done = false;
    bool aborted = false;
    const void* via = nullptr;  // the connection it was sent on (null: through the queue)
    rpc::pb::RemotePrefillResult result;
  };
  // How an attempt ended; the reservation is released (or the engine's) by the time it is returned.
  struct Attempt {
    enum Kind { kDecode, kFallBack, kAborted } kind;
    std::string fallback_reason;
    rpc::pb::RemotePrefillResult result;  // kDecode: where the KV came from, the first token
  };

  RemotePrefillClient(std::shared_ptr<Core> core, std::shared_ptr<Outputs> outputs);
  void run(engine::Request request, const std::string& address, int timeout_ms);
  Attempt attempt(const engine::Request& request, const std::string& address, int timeout_ms);
  // Waits for the answer (or an abort, or the deadline), then forgets `id`; true on the deadline.
  bool wait(const std::string& id, Pending& p, bool sent, const std::string& address, int timeout_ms);
  void decode_from_kv(engine::Request request, const rpc::pb::RemotePrefillResult& result);
  void fall_back(engine::Request request, const std::string& reason);
  // Everything sent on the connection `via` fails now and falls back (only that connection: a duplicate
  // dialed by a racing thread and closed at once must not fail the others' prefills).
  void on_peer_closed(const void* via, const std::string& address, const Status& reason);

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<Outputs> outputs_;
  std::shared_ptr<PeerPool> peers_;  // set once by create()
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<Pending>> pending_;  // GUARDED_BY(mu_): by request id
};

}  // namespace tandem::worker
