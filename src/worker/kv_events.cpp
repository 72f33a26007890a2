// KV events, the worker's side (see kv_events.h).
#include "worker/kv_events.h"

#include <spdlog/spdlog.h>

namespace tandem::worker {

void KvEventPublisher::start(std::shared_ptr<Registration> registration) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    registration_ = registration;
  }
  if (!core_->options.prefix_caching || core_->engine->kv_hash_salt() == 0) return;
  std::weak_ptr<KvEventPublisher> weak = weak_from_this();
  core_->engine->set_on_kv_events([weak](engine::KvCacheEvents events) {
    if (auto self = weak.lock()) self->publish(std::move(events));
  });
}

void KvEventPublisher::publish(engine::KvCacheEvents events) {
  rpc::pb::Envelope env;
  auto* e = env.mutable_kv_events();
  e->mutable_stored()->Add(events.stored.begin(), events.stored.end());
  e->mutable_removed()->Add(events.removed.begin(), events.removed.end());
  std::lock_guard<std::mutex> lock(mu_);
  e->set_seq(++seq_);
  // A batch no frontend hears (none connected) is still numbered: a frontend that connects later
  // starts from a snapshot, and one that missed it sees the gap.
  if (auto registration = registration_.lock()) registration->broadcast(env);
}

void KvEventPublisher::send_snapshot(const std::shared_ptr<rpc::Connection>& conn) {
  rpc::pb::Envelope env;
  auto* s = env.mutable_kv_snapshot();
  std::lock_guard<std::mutex> lock(mu_);
  // Taken under mu_, so no batch is numbered meanwhile: the snapshot holds at least batch seq_'s
  // changes (it may hold some of the next batch's too; applying those again changes nothing).
  const auto hashes = core_->engine->kv_cached_hashes();
  s->set_seq(seq_);
  s->mutable_hashes()->Add(hashes.begin(), hashes.end());
  conn->send(env);
  spdlog::debug("event=kv_snapshot_sent seq={} blocks={} peer={}", seq_, hashes.size(), conn->peer());
}

}  // namespace tandem::worker
