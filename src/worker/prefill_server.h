// The prefill side of a remote prefill (DESIGN.md §2): take a RemotePrefill (on the request plane from
// a decode worker, or pulled from the prefill queue), prefill it (kPrefillOnly), push the prompt's KV
// into the decode worker's reserved blocks, and answer with the first token.
//
// Ownership: held by shared_ptr; engine callbacks hold it while their prefill runs. It owns two push
// threads and, with a queue, the pull thread; stop() joins them.
// Thread-safety: every method from any thread. `mu_` guards the push jobs (`cv_` wakes the push
// threads). The engine thread only queues a job: the push itself runs on a push thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "rpc/connection.h"
#include "worker/core.h"
#include "worker/peers.h"
#include "worker/registration.h"

namespace tandem::worker {

class PrefillServer : public std::enable_shared_from_this<PrefillServer> {
 public:
  // `peers`: where a queued prefill's answer is sent from (the decode worker's reply address).
  // `registration`: checks the decode worker against its registered KV descriptor.
  PrefillServer(std::shared_ptr<Core> core, std::shared_ptr<PeerPool> peers, std::shared_ptr<Registration> registration);

  // Starts the push threads, and the pull thread for a prefill worker with a queue.
  void start();
  // A RemotePrefill to serve; the answer goes to `reply_to`, and `queued` (from the queue) is
  // acknowledged once it went.
  void on_remote_prefill(const rpc::pb::RemotePrefill& rp, const std::shared_ptr<rpc::Connection>& reply_to,
                         std::shared_ptr<cluster::PrefillQueue::Message> queued = nullptr);
  // No push queued.
  bool idle() const;
  // REQUIRES: core->lifecycle.stop is set. Wakes the push threads (they run the pushes still queued,
  // then exit) and joins the pull thread.
  void stop_pulling();
  // REQUIRES: core->lifecycle.stop is set. Joins the push threads.
  void stop_pushing();

 private:
  // A finished kPrefillOnly request whose KV is to be pushed.
  struct PushJob {
    rpc::pb::RemotePrefill request;
    engine::RequestOutput output;
    std::weak_ptr<rpc::Connection> reply_to;
    std::shared_ptr<cluster::PrefillQueue::Message> queued;  // acknowledged once the result is sent
  };

  void push_loop();
  void run_push(PushJob& job);
  // Pulls one message whenever there is room, until the worker drains.
  void pull_loop();

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<PeerPool> peers_;
  const std::shared_ptr<Registration> registration_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PushJob> push_jobs_;  // GUARDED_BY(mu_)
  std::vector<std::thread> push_threads_;
  std::thread pull_thread_;
};

}  // namespace tandem::worker
