// Where a request's outputs go: the connection its Generate came on (its owner), and the engine
// submissions whose every output is routed there.
//
// Outputs leave through a sender thread of their own: the engine's callback only queues the output (a
// move and a lock), so turning it into protobuf and framing it stay off the engine thread, whose time
// is the GPU's (issue 23). The sender sends what it finds queued in the order it was queued; every
// output of a request goes through the queue, errors and aborts included, so a request's outputs never
// overtake each other.
//
// Ownership: held by shared_ptr; engine callbacks keep it alive while their request runs. It holds
// weak references to connections, so a frontend that went away is simply skipped. The destructor sends
// what is queued, then stops the sender.
// Thread-safety: every method from any thread; `mu_` guards the owner table, `queue_mu_` the queue
// (no call out is made under either).
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rpc/connection.h"
#include "worker/core.h"

namespace tandem::worker {

class Outputs : public std::enable_shared_from_this<Outputs> {
 public:
  explicit Outputs(std::shared_ptr<Core> core);
  ~Outputs();
  Outputs(const Outputs&) = delete;
  Outputs& operator=(const Outputs&) = delete;

  // Outputs of `request_id` go to `conn` until its last output.
  void set_owner(const std::string& request_id, const std::shared_ptr<rpc::Connection>& conn);
  // Sends `output` to the request's owner; `finished` (the request's last output) forgets the owner.
  void send(const std::string& request_id, rpc::pb::Output output, bool finished);
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
  // Nothing queued or being sent, and no request has an owner (every last output is with its connection).
  bool empty() const;

 private:
  // One output waiting for the sender: an engine output (converted there) or a ready message.
  struct Queued {
    std::string request_id;  // when engine_output is empty (it carries its own)
    std::optional<engine::RequestOutput> engine_output;
    rpc::pb::Output output;  // when engine_output is empty; else what rides on it (prefill info, logprobs)
    bool finished = false;   // the request's last output: its owner is forgotten
  };
  void enqueue(Queued item);
  void sender_loop();

  const std::shared_ptr<Core> core_;
  mutable std::mutex mu_;
  std::map<std::string, std::weak_ptr<rpc::Connection>> owners_;  // GUARDED_BY(mu_): request -> owner

  mutable std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::vector<Queued> queue_;  // GUARDED_BY(queue_mu_)
  bool sending_ = false;       // GUARDED_BY(queue_mu_): the sender holds items taken from queue_
  bool stop_ = false;          // GUARDED_BY(queue_mu_)
  std::thread sender_;
};

}  // namespace tandem::worker
