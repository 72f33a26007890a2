// Decode side of a remote prefill (see remote_prefill.h).
#include "worker/remote_prefill.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <optional>
#include <thread>

#include "worker/convert.h"
#include "worker/kv_reservation.h"

namespace tandem::worker {
namespace {

// Runs `f` when the scope ends, however it ends.
class OnScopeExit {
 public:
  explicit OnScopeExit(std::function<void()> f) : f_(std::move(f)) {}
  ~OnScopeExit() {
    if (f_) f_();
  }
  // Runs it now instead of at the end.
  void run_now() {
    if (f_) std::exchange(f_, nullptr)();
  }
  OnScopeExit(const OnScopeExit&) = delete;
  OnScopeExit& operator=(const OnScopeExit&) = delete;

 private:
  std::function<void()> f_;
};

rpc::pb::Envelope remote_prefill_message(const Core& core, const engine::Request& request,
                                         const engine::KvReservation& reservation) {
  const auto& spec = core.engine->backend().kv_cache_spec();
  rpc::pb::Envelope env;
  auto* rp = env.mutable_remote_prefill();
  rp->set_request_id(request.request_id);
  rp->mutable_prompt_token_ids()->Add(request.prompt_token_ids.begin(), request.prompt_token_ids.end());
  // The first token is sampled there under the request's own rules (min_tokens masks EOS). One choice,
  // and no stop strings: those are matched on the text, which this worker streams.
  to_proto(request.sampling, rp->mutable_sampling());
  rp->mutable_sampling()->clear_stop();
  rp->mutable_sampling()->set_n(1);
  rp->set_num_resumed_tokens(request.num_resumed_tokens);
  rp->set_choice_index(request.choice_index);
  rp->set_transfer_address(core.transfer->address());
  rp->mutable_dest_block_ids()->Add(reservation.block_ids.begin(), reservation.block_ids.end());
  rp->set_num_cached_tokens(reservation.num_cached_tokens);
  rp->set_dest_block_size(spec.block_size);
  rp->set_dest_block_bytes(static_cast<int64_t>(spec.block_bytes()));
  rp->set_dest_num_layers(spec.num_layers);
  rp->set_dest_kv_dtype(backend::kv_dtype_name(spec.dtype));
  rp->set_decode_worker_id(core.options.worker_id);
  return env;
}

void send_abort(const std::shared_ptr<rpc::Connection>& conn, const std::string& request_id) {
  rpc::pb::Envelope env;
  env.mutable_abort()->set_request_id(request_id);
  conn->send(env);
}

}  // namespace

RemotePrefillClient::RemotePrefillClient(std::shared_ptr<Core> core, std::shared_ptr<Outputs> outputs)
    : core_(std::move(core)), outputs_(std::move(outputs)) {}

std::shared_ptr<RemotePrefillClient> RemotePrefillClient::create(std::shared_ptr<Core> core,
                                                                 std::shared_ptr<Outputs> outputs) {
  const int dial_timeout_ms = core->options.dial_timeout_ms;
  std::shared_ptr<RemotePrefillClient> client(new RemotePrefillClient(std::move(core), std::move(outputs)));
  std::weak_ptr<RemotePrefillClient> weak = client;
  client->peers_ = std::make_shared<PeerPool>(
      dial_timeout_ms,
      [weak](rpc::pb::Envelope& env) {
        auto self = weak.lock();
        if (self && env.has_remote_prefill_result()) self->on_result(env.remote_prefill_result());
      },
      [weak](const void* via, const std::string& address, const Status& reason) {
        if (auto self = weak.lock()) self->on_peer_closed(via, address, reason);
      });
  return client;
}

void RemotePrefillClient::start(engine::Request request, const std::string& address, int timeout_ms) {
  std::thread([self = shared_from_this(), request = std::move(request), address, timeout_ms]() mutable {
    self->run(std::move(request), address, timeout_ms);
  }).detach();
}

void RemotePrefillClient::run(engine::Request request, const std::string& address, int timeout_ms) {
  Attempt a = attempt(request, address, timeout_ms);
  // The reservation is gone by now, so a local prefill under the same request id cannot adopt it.
  switch (a.kind) {
    case Attempt::kDecode: return decode_from_kv(std::move(request), a.result);
    case Attempt::kFallBack: return fall_back(std::move(request), a.fallback_reason);
    case Attempt::kAborted: return outputs_->finish_aborted(request.request_id, request.sampling.n);
  }
}

RemotePrefillClient::Attempt RemotePrefillClient::attempt(const engine::Request& request, const std::string& address,
                                                          int timeout_ms) {
  auto fallback = [](std::string reason) { return Attempt{Attempt::kFallBack, std::move(reason), {}}; };
  const std::string& id = request.request_id;
  auto reserved = KvReservationGuard::reserve(*core_->engine, id, request.prompt_token_ids, core_->counters.reservations);
  if (!reserved.ok()) return fallback("reserve_failed: " + reserved.status().message());
  KvReservationGuard& reservation = *reserved;  // released on every return but the last

  const bool via_queue = address.empty();
  if (via_queue && !core_->queue) return fallback("no_prefill_queue: this worker was started without --prefill-queue");
  std::shared_ptr<rpc::Connection> conn;
  if (!via_queue) {
    Status error;
    conn = peers_->get(address, &error);
    if (!conn) return fallback("prefill_unreachable: " + error.message());
  }

  auto p = std::make_shared<Pending>();
  p->via = conn.get();
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_[id] = p;
  }
  OnScopeExit unregister([&] {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(id);
    if (it != pending_.end() && it->second == p) pending_.erase(it);
  });
  core_->transfer->expect(id, reservation.reservation().block_ids);
  // Declared after the reservation, so it ends first: no push lands in blocks already released.
  OnScopeExit stop_expecting([&] { core_->transfer->forget(id); });

  rpc::pb::Envelope env = remote_prefill_message(*core_, request, reservation.reservation());
  bool sent = false;
  if (via_queue) {
    auto* rp = env.mutable_remote_prefill();
    rp->set_reply_address(core_->rpc_address);
    rp->set_deadline_unix_ms(unix_now_ms() + timeout_ms);
    Status s = core_->queue->publish(env.SerializeAsString());
    // NATS is down: prefill here now rather than wait out the deadline.
    if (!s.ok()) return fallback("prefill_queue_unavailable: " + s.message());
    sent = true;
  } else {
    sent = conn->send(env);
  }
  const bool timed_out = wait(id, *p, sent, address, timeout_ms);
  // From here no late push can land in the reserved blocks, whatever happens next to them.
  stop_expecting.run_now();
  if (p->aborted) {
    if (conn) send_abort(conn, id);
    return Attempt{Attempt::kAborted, {}, {}};
  }
  if (timed_out || p->result.error_code() != 0) {
    if (timed_out && conn) send_abort(conn, id);
    return fallback(timed_out ? "timeout after " + std::to_string(timeout_ms) + " ms"
                              : "prefill_failed: " + p->result.error_message());
  }
  // The KV is in our blocks: the engine takes them over with the decode.
  reservation.hand_to_engine();
  return Attempt{Attempt::kDecode, {}, p->result};
}

bool RemotePrefillClient::wait(const std::string& id, Pending& p, bool sent, const std::string& address,
                               int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!sent) {
    p.done = true;
    p.result.set_error_code(static_cast<int32_t>(StatusCode::kUnavailable));
    p.result.set_error_message("connection to prefill worker " + address + " is closed");
  }
  const bool timed_out =
      !cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return p.done || p.aborted; });
  // Forgotten in the same critical section: an answer or abort arriving later finds nothing to change.
  pending_.erase(id);
  return timed_out;
}

void RemotePrefillClient::decode_from_kv(engine::Request request, const rpc::pb::RemotePrefillResult& r) {
  const std::string id = request.request_id;
  core_->counters.transfer_bytes.fetch_add(r.kv_bytes());
  rpc::pb::PrefillInfo info;
  info.set_present(true);
  info.set_remote(true);
  info.set_kv_bytes(r.kv_bytes());
  info.set_transfer_seconds(r.transfer_seconds());
  // The engine emits the first token itself; its logprobs (computed on the prefill worker) ride on
  // that first output.
  request.prefill_mode = engine::PrefillMode::kDecodeFromKv;
  request.first_token_id = r.first_token_id();
  std::optional<rpc::pb::TokenLogprobs> first_logprobs;
  if (r.has_logprobs()) first_logprobs = r.first_logprobs();
  // Tell the frontend at once that the prefill is done (an output with no tokens, carrying where the
  // prefill ran): it frees the request's place in the prefill queue. Waiting for the first token
  // would hold that place through this engine's next step, which is long when this worker is busy
  // prefilling locally; on the two-GPU study that starved the prefill worker and sent more prompts
  // to local prefill, which made the steps longer still (docs/disaggregation.md).
  rpc::pb::Output done;
  done.set_request_id(id);
  done.set_index(0);
  *done.mutable_prefill() = info;
  outputs_->send(id, std::move(done), /*finished=*/false);
  outputs_->submit(std::move(request), rpc::pb::PrefillInfo{}, first_logprobs);
}

void RemotePrefillClient::fall_back(engine::Request request, const std::string& reason) {
  spdlog::warn("event=remote_prefill_fallback request_id={} reason=\"{}\"", request.request_id, reason);
  core_->counters.fallbacks.fetch_add(1);
  rpc::pb::PrefillInfo info;
  info.set_present(true);
  info.set_fell_back(true);
  info.set_fallback_reason(reason);
  request.prefill_mode = engine::PrefillMode::kLocal;
  outputs_->submit(std::move(request), info);
}

void RemotePrefillClient::on_result(const rpc::pb::RemotePrefillResult& r) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(r.request_id());
  if (it == pending_.end()) return;
  it->second->done = true;
  it->second->result = r;
  cv_.notify_all();
}

void RemotePrefillClient::on_peer_closed(const void* via, const std::string& address, const Status& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, p] : pending_) {
    if (p->done || p->via != via) continue;
    p->done = true;
    p->result.set_error_code(static_cast<int32_t>(StatusCode::kUnavailable));
    p->result.set_error_message("prefill worker " + address + ": " + reason.message());
  }
  cv_.notify_all();
}

bool RemotePrefillClient::abort(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(request_id);
  if (it == pending_.end()) return false;
  it->second->aborted = true;
  cv_.notify_all();
  return true;
}

bool RemotePrefillClient::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_.empty();
}

}  // namespace tandem::worker
