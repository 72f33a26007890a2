// Register and heartbeat messages, and the prefix summary they carry (see reports.h).
#include "worker/reports.h"

#include <unistd.h>

#include <algorithm>

namespace tandem::worker {

rpc::pb::Role to_proto(Role role) {
  switch (role) {
    case Role::kPrefill: return rpc::pb::ROLE_PREFILL;
    case Role::kDecode: return rpc::pb::ROLE_DECODE;
    case Role::kBoth: return rpc::pb::ROLE_BOTH;
  }
  return rpc::pb::ROLE_UNSPECIFIED;
}

Reports::Reports(std::shared_ptr<Core> core)
    : core_(std::move(core)), prefix_index_(std::max(1, core_->engine->backend().kv_cache_spec().block_size)) {}

rpc::pb::Envelope Reports::registration() const {
  const auto& options = core_->options;
  auto& backend = core_->engine->backend();
  rpc::pb::Envelope env;
  auto* r = env.mutable_register_();
  r->set_worker_id(options.worker_id);
  r->set_role(to_proto(options.role));
  r->set_model(options.model_name);
  for (const auto& alias : options.model_aliases) r->add_model_aliases(alias);
  r->set_rpc_address(core_->rpc_address);
  r->set_transfer_address(core_->transfer->address());
  const auto& spec = backend.kv_cache_spec();
  r->set_num_kv_blocks(spec.num_blocks);
  r->set_block_size(spec.block_size);
  r->set_max_model_len(backend.config().max_position_embeddings);
  r->set_vocab_size(backend.config().vocab_size);
  r->set_pid(static_cast<int32_t>(getpid()));
  r->set_no_prefix_caching(!options.prefix_caching);
  r->set_kv_cache_dtype(backend::kv_dtype_name(spec.dtype));
  const uint64_t salt = options.prefix_caching ? core_->engine->kv_hash_salt() : 0;
  r->set_kv_events(salt != 0);
  r->set_kv_hash_salt(salt);
  return env;
}

rpc::pb::Envelope Reports::heartbeat() const {
  const engine::EngineStats s = core_->engine->stats();
  const Counters& c = core_->counters;
  rpc::pb::Envelope env;
  auto* h = env.mutable_heartbeat();
  h->set_worker_id(core_->options.worker_id);
  h->set_num_running(s.num_running);
  h->set_num_waiting(s.num_waiting);
  h->set_num_kv_blocks_total(s.num_kv_blocks_total);
  h->set_num_kv_blocks_used(s.num_kv_blocks_used);
  h->set_num_kv_blocks_cached(s.num_kv_blocks_cached);
  h->set_prefix_cache_queries(s.prefix_cache_queries);
  h->set_prefix_cache_hits(s.prefix_cache_hits);
  h->set_num_preemptions(s.num_preemptions);
  h->set_prompt_tokens_total(s.prompt_tokens_total);
  h->set_generation_tokens_total(s.generation_tokens_total);
  h->set_num_prefills_in_flight(c.prefills_in_flight.load());
  h->set_num_reservations(c.reservations.load());
  h->set_kv_transfer_bytes_total(c.transfer_bytes.load());
  h->set_kv_transfers_total(c.transfers.load());
  h->set_kv_transfer_seconds_total(static_cast<double>(c.transfer_micros.load()) / 1e6);
  h->set_remote_prefill_fallbacks_total(c.fallbacks.load());
  return env;
}

rpc::pb::Envelope Reports::delta_heartbeat() {
  rpc::pb::Envelope env = heartbeat();
  auto* h = env.mutable_heartbeat();
  std::lock_guard<std::mutex> lock(mu_);
  h->set_prefix_reset(prefix_reset_);
  h->mutable_prefix_blocks_added()->Add(prefix_added_.begin(), prefix_added_.end());
  prefix_added_.clear();
  prefix_reset_ = false;
  return env;
}

void Reports::add_full_prefix(rpc::pb::Envelope& env) const {
  auto* h = env.mutable_heartbeat();
  h->set_prefix_reset(true);
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t x : prefix_index_.hashes()) h->add_prefix_blocks_added(x);
}

void Reports::add_full_prefix_and_restart(rpc::pb::Envelope& env) {
  auto* h = env.mutable_heartbeat();
  h->set_prefix_reset(true);
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t x : prefix_index_.hashes()) h->add_prefix_blocks_added(x);
  prefix_added_.clear();
  prefix_reset_ = false;
}

void Reports::note_prompt(const std::vector<int32_t>& prompt) {
  std::lock_guard<std::mutex> lock(mu_);
  if (prefix_index_.insert(prompt, &prefix_added_)) {
    prefix_reset_ = true;
    prefix_added_ = prefix_index_.hashes();
  }
}

}  // namespace tandem::worker
