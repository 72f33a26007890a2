// Where a request's outputs go: the connection its Generate came on (its owner), and the engine
// submissions whose every output is routed there.
//
// Ownership: held by shared_ptr; engine callbacks keep it alive while their request runs. It holds
// weak references to connections, so a frontend that went away is simply skipped.
// Thread-safety: every method from any thread; `mu_` guards the owner table only (no call out is made
// under it).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "rpc/connection.h"
#include "worker/core.h"

namespace tandem::worker {

class Outputs : public std::enable_shared_from_this<Outputs> {
 public:
  explicit Outputs(std::shared_ptr<Core> core) : core_(std::move(core)) {}

  // Outputs of `request_id` go to `conn` until its last output.
  void set_owner(const std::string& request_id, const std::shared_ptr<rpc::Connection>& conn);
  // Sends `env` to the request's owner; `finished` (the request's last output) forgets the owner.
  void send(const std::string& request_id, const rpc::pb::Envelope& env, bool finished);
  // Ends each of the `n` choices with FINISH_ERROR and `status`.
  void send_error(const std::string& request_id, const Status& status, int n);
  // Ends each of the `n` choices with FINISH_ABORT.
  void finish_aborted(const std::string& request_id, int n);
  // Submits to the engine; every engine output goes to the request's owner. `info` rides on the first
  // output (where the prefill ran), and so do `first_logprobs` when that output has none of its own
  // (a decode from transferred KV: the first token was sampled on the prefill worker). An engine
  // refusal ends the request with an error output.
  void submit(engine::Request request, const rpc::pb::PrefillInfo& info,
              std::optional<rpc::pb::TokenLogprobs> first_logprobs = std::nullopt);

  // Requests whose owner is `conn` or already gone.
  std::vector<std::string> owned_by(const std::shared_ptr<rpc::Connection>& conn) const;
  bool empty() const;

 private:
  const std::shared_ptr<Core> core_;
  mutable std::mutex mu_;
  std::map<std::string, std::weak_ptr<rpc::Connection>> owners_;  // GUARDED_BY(mu_): request -> owner
};

}  // namespace tandem::worker
