// KvReservationGuard: the KV blocks a decode worker reserves in its engine for a remote prefill to
// push into. The guard releases them when it goes out of scope, on every exit that does not hand them
// to the engine, so no fall-back path frees blocks by hand.
//
// Ownership: move-only; at most one guard holds a request's reservation. It refers to the engine and
// the counter it was made with, which must outlive it.
// Thread-safety: one guard belongs to one thread; the engine and the counter are thread-safe.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace tandem::worker {

class KvReservationGuard {
 public:
  // Reserves blocks for `prompt` under `request_id` (engine::Engine::reserve_kv) and counts the
  // reservation in `held` while the guard holds it. The engine's error when nothing could be reserved.
  static StatusOr<KvReservationGuard> reserve(engine::Engine& engine, const std::string& request_id,
                                              const std::vector<int32_t>& prompt, std::atomic<int>& held);

  KvReservationGuard(KvReservationGuard&& other) noexcept;
  KvReservationGuard& operator=(KvReservationGuard&& other) noexcept;
  KvReservationGuard(const KvReservationGuard&) = delete;
  KvReservationGuard& operator=(const KvReservationGuard&) = delete;
  ~KvReservationGuard() { release(); }

  const engine::KvReservation& reservation() const { return reservation_; }
  bool held() const { return engine_ != nullptr; }

  // The engine takes the blocks over (the next submit under this request id adopts the reservation):
  // the guard forgets them without releasing.
  void hand_to_engine();
  // Frees the blocks now (engine::Engine::release_blocks); no-op once released or handed over.
  void release();

 private:
  KvReservationGuard(engine::Engine& engine, std::string request_id, engine::KvReservation reservation,
                     std::atomic<int>& held);

  engine::Engine* engine_;  // null once released or handed over
  std::string request_id_;
  engine::KvReservation reservation_;
  std::atomic<int>* held_;
};

}  // namespace tandem::worker
