// Dialed connections to other workers (see peers.h).
#include "worker/peers.h"

namespace tandem::worker {

PeerPool::PeerPool(int dial_timeout_ms, MessageHandler on_message, CloseHandler on_close)
    : dial_timeout_ms_(dial_timeout_ms), on_message_(std::move(on_message)), on_close_(std::move(on_close)) {}

std::shared_ptr<rpc::Connection> PeerPool::get(const std::string& address, Status* error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(address);
    if (it != peers_.end() && it->second->is_open()) return it->second;
  }
  auto dialed = rpc::Connection::dial(address, dial_timeout_ms_);
  if (!dialed.ok()) {
    *error = dialed.status();
    return nullptr;
  }
  auto conn = *dialed;
  std::weak_ptr<PeerPool> weak = shared_from_this();
  const void* raw = conn.get();
  conn->start(
      [weak](rpc::pb::Envelope& env) {
        if (auto self = weak.lock()) self->on_message_(env);
      },
      [weak, address, raw](const Status& reason) {
        if (auto self = weak.lock()) self->on_close_(raw, address, reason);
      });
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = peers_[address];
  if (slot && slot->is_open()) {
    conn->close();  // a racing caller dialed first: use its connection
    return slot;
  }
  slot = conn;
  return conn;
}

std::vector<std::shared_ptr<rpc::Connection>> PeerPool::all() const {
  std::vector<std::shared_ptr<rpc::Connection>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [address, conn] : peers_) out.push_back(conn);
  return out;
}

}  // namespace tandem::worker
