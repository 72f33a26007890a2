// The remote prefill's KV reservation, released on scope exit (see kv_reservation.h).
#include "worker/kv_reservation.h"

#include <utility>

namespace tandem::worker {

StatusOr<KvReservationGuard> KvReservationGuard::reserve(engine::Engine& engine, const std::string& request_id,
                                                         const std::vector<int32_t>& prompt, std::atomic<int>& held) {
  auto reservation = engine.reserve_kv(request_id, prompt);
  if (!reservation.ok()) return reservation.status();
  return KvReservationGuard(engine, request_id, std::move(*reservation), held);
}

KvReservationGuard::KvReservationGuard(engine::Engine& engine, std::string request_id,
                                       engine::KvReservation reservation, std::atomic<int>& held)
    : engine_(&engine), request_id_(std::move(request_id)), reservation_(std::move(reservation)), held_(&held) {
  held_->fetch_add(1);
}

KvReservationGuard::KvReservationGuard(KvReservationGuard&& other) noexcept
    : engine_(std::exchange(other.engine_, nullptr)),
      request_id_(std::move(other.request_id_)),
      reservation_(std::move(other.reservation_)),
      held_(other.held_) {}

KvReservationGuard& KvReservationGuard::operator=(KvReservationGuard&& other) noexcept {
  if (this != &other) {
    release();
    engine_ = std::exchange(other.engine_, nullptr);
    request_id_ = std::move(other.request_id_);
    reservation_ = std::move(other.reservation_);
    held_ = other.held_;
  }
  return *this;
}

void KvReservationGuard::hand_to_engine() {
  if (!engine_) return;
  engine_ = nullptr;
  held_->fetch_sub(1);
}

void KvReservationGuard::release() {
  if (!engine_) return;
  engine_->release_blocks(request_id_);
  engine_ = nullptr;
  held_->fetch_sub(1);
}

}  // namespace tandem::worker
