// What the worker tells its frontends about itself: the Register message (who it is, what it holds)
// and heartbeats (its load, and the prefix summary: hashes of the prompt blocks it has seen, which the
// frontends route by).
//
// Ownership: one per worker, shared by the request plane (which records prompts) and the
// Registration (which sends the messages).
// Thread-safety: every method from any thread. `mu_` guards the prefix summary; no call out is made
// under it, so it may be taken inside a Registration's own lock. The engine's stats are read before
// `mu_` (an engine may call back into the worker while holding its own lock).
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "common/prefix_index.h"
#include "rpc/messages.pb.h"
#include "worker/core.h"

namespace tandem::worker {

rpc::pb::Role to_proto(Role role);

class Reports {
 public:
  explicit Reports(std::shared_ptr<Core> core);

  // The Register message (first on an embedded registry connection; an answer to FrontendHello).
  rpc::pb::Envelope registration() const;
  // The load only (engine stats and the worker's counters); no prefix summary.
  rpc::pb::Envelope heartbeat() const;
  // The next heartbeat round: the load plus what the prefix summary gained since the last round (or
  // the whole summary after it was reset); the same for every frontend, so it is taken once a round.
  rpc::pb::Envelope delta_heartbeat();
  // Makes the heartbeat `env` carry the whole prefix summary (for a new connection).
  void add_full_prefix(rpc::pb::Envelope& env) const;
  // As add_full_prefix, and the next delta starts from here (the only connection got everything).
  void add_full_prefix_and_restart(rpc::pb::Envelope& env);

  // A decode worker saw `prompt`: its blocks join the summary.
  void note_prompt(const std::vector<int32_t>& prompt);

 private:
  const std::shared_ptr<Core> core_;
  mutable std::mutex mu_;
  PrefixIndex prefix_index_;            // GUARDED_BY(mu_)
  std::vector<uint64_t> prefix_added_;  // GUARDED_BY(mu_): since the last heartbeat round
  bool prefix_reset_ = false;           // GUARDED_BY(mu_): the index forgot everything since then
};

}  // namespace tandem::worker
