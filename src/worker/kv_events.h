// KV events, the worker's side (docs/routing.md): what its engine's prefix cache stored and evicted,
// one numbered batch per engine step, sent to every frontend over the registry/request-plane
// connections; and the whole cache as a snapshot when a frontend asks (after it registered the worker,
// or after it saw a gap in the numbers). Prefill workers publish too: the router weighs their caches
// when it picks one.
//
// Ownership: held by shared_ptr by the worker and the request plane; the engine's callback and the
// registration are held weakly.
// Thread-safety: every method from any thread. `mu_` orders numbering and sending, so every frontend
// receives the batches in number order; it is taken before the registration's lock and before the
// engine's, never inside either.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "rpc/connection.h"
#include "worker/core.h"
#include "worker/registration.h"

namespace tandem::worker {

class KvEventPublisher : public std::enable_shared_from_this<KvEventPublisher> {
 public:
  explicit KvEventPublisher(std::shared_ptr<Core> core) : core_(std::move(core)) {}

  // Hooks the engine's step callback. A worker without a prefix cache publishes nothing.
  // REQUIRES: before the first request; `registration` carries the batches.
  void start(std::shared_ptr<Registration> registration);
  // One engine step's changes (the engine thread).
  void publish(engine::KvCacheEvents events);
  // Answers a KvSnapshotRequest on `conn`.
  void send_snapshot(const std::shared_ptr<rpc::Connection>& conn);

 private:
  const std::shared_ptr<Core> core_;
  std::mutex mu_;
  std::weak_ptr<Registration> registration_;  // GUARDED_BY(mu_)
  uint64_t seq_ = 0;                          // GUARDED_BY(mu_): the last batch's number
};

}  // namespace tandem::worker
