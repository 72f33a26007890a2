// Prefill side of a remote prefill (see prefill_server.h).
#include "worker/prefill_server.h"

#include <spdlog/spdlog.h>

#include "worker/convert.h"
#include "worker/remote_prefill_checks.h"

namespace tandem::worker {

PrefillServer::PrefillServer(std::shared_ptr<Core> core, std::shared_ptr<PeerPool> peers,
                             std::shared_ptr<Registration> registration)
    : core_(std::move(core)), peers_(std::move(peers)), registration_(std::move(registration)) {}

void PrefillServer::start() {
  for (int i = 0; i < 2; ++i) push_threads_.emplace_back([this] { push_loop(); });
  if (core_->queue && core_->prefills()) pull_thread_ = std::thread([this] { pull_loop(); });
}

void PrefillServer::on_remote_prefill(const rpc::pb::RemotePrefill& rp, const std::shared_ptr<rpc::Connection>& reply_to,
                                      std::shared_ptr<cluster::PrefillQueue::Message> queued) {
  const std::string id = rp.request_id();
  auto reply_error = [reply_to, id, queued](const Status& status) {
    if (queued) (void)queued->ack();  // an answer went back: redelivering would not help
    rpc::pb::Envelope env;
    auto* r = env.mutable_remote_prefill_result();
    r->set_request_id(id);
    r->set_error_code(static_cast<int32_t>(status.code()));
    r->set_error_message(status.message());
    reply_to->send(env);
  };
  if (!core_->prefills()) return reply_error(Status::InvalidArgument("a decode worker does not serve remote prefills"));
  const auto& spec = core_->engine->backend().kv_cache_spec();
  const LocalKvGeometry local{backend::kv_dtype_name(spec.dtype), spec.block_size, spec.num_layers,
                              static_cast<int64_t>(spec.block_bytes())};
  if (Status checked = check_remote_prefill(rp, local); !checked.ok()) {
    spdlog::warn("event=remote_prefill_refused request_id={} reason=\"{}\"", id, checked.message());
    return reply_error(checked);
  }
  Status sender = registration_->check_decode_worker(rp);
  if (!sender.ok()) return reply_error(sender);
  engine::Request request;
  request.request_id = id;
  request.prompt_token_ids.assign(rp.prompt_token_ids().begin(), rp.prompt_token_ids().end());
  request.sampling = from_proto(rp.sampling());
  request.num_resumed_tokens = rp.num_resumed_tokens();  // the first token's draw continues the positions
  request.choice_index = rp.choice_index();               // ... of the choice it carries
  request.prefill_mode = engine::PrefillMode::kPrefillOnly;
  core_->counters.prefills_in_flight.fetch_add(1);
  std::weak_ptr<rpc::Connection> weak_reply = reply_to;
  auto self = shared_from_this();
  Status status = core_->engine->submit(std::move(request), [self, rp, weak_reply, queued](engine::RequestOutput out) {
    if (!out.finished) return;
    // The engine thread must not block: the push runs on the push threads.
    std::lock_guard<std::mutex> lock(self->mu_);
    self->push_jobs_.push_back(PushJob{rp, std::move(out), weak_reply, queued});
    self->cv_.notify_all();
  });
  if (!status.ok()) {
    core_->counters.prefills_in_flight.fetch_sub(1);
    reply_error(status);
  }
}

bool PrefillServer::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return push_jobs_.empty();
}

void PrefillServer::push_loop() {
  while (true) {
    PushJob job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return core_->lifecycle.stop.load() || !push_jobs_.empty(); });
      if (push_jobs_.empty()) return;
      job = std::move(push_jobs_.front());
      push_jobs_.pop_front();
    }
    run_push(job);
    core_->counters.prefills_in_flight.fetch_sub(1);
  }
}

void PrefillServer::run_push(PushJob& job) {
  const auto& rp = job.request;
  const auto& out = job.output;
  Counters& counters = core_->counters;
  rpc::pb::Envelope env;
  auto* r = env.mutable_remote_prefill_result();
  r->set_request_id(rp.request_id());
  Status status;
  if (out.finish_reason == engine::FinishReason::kError || out.finish_reason == engine::FinishReason::kAbort ||
      out.token_ids.empty()) {
    status = out.error.ok() ? Status::Aborted("prefill aborted") : out.error;
  } else if (auto copies = remote_prefill_copies(rp, out.kv_block_ids); !copies.ok()) {
    status = copies.status();
  } else {
    auto stats = core_->transfer->push(rp.transfer_address(), rp.request_id(), *copies, core_->options.transfer_timeout_ms);
    if (stats.ok()) {
      counters.transfers.fetch_add(1);
      counters.transfer_bytes.fetch_add(stats->num_bytes);
      counters.transfer_micros.fetch_add(static_cast<int64_t>(stats->seconds * 1e6));
      r->set_kv_bytes(stats->num_bytes);
      r->set_transfer_seconds(stats->seconds);
      r->set_first_token_id(out.token_ids[0]);
      r->set_num_cached_prompt_tokens(out.num_cached_prompt_tokens);
      if (!out.logprobs.empty()) {
        r->set_has_logprobs(true);
        to_proto(out.logprobs[0], r->mutable_first_logprobs());
      }
      spdlog::info("event=kv_pushed request_id={} transport={} num_blocks={} num_bytes={} seconds={:.6f} gbps={:.2f}",
                   rp.request_id(), stats->transport, stats->num_blocks, stats->num_bytes, stats->seconds,
                   stats->seconds > 0 ? static_cast<double>(stats->num_bytes) / stats->seconds / 1e9 : 0.0);
    } else {
      status = stats.status();
    }
  }
  core_->engine->release_blocks(rp.request_id());
  if (!status.ok()) {
    r->set_error_code(static_cast<int32_t>(status.code()));
    r->set_error_message(status.message());
  }
  if (auto conn = job.reply_to.lock()) conn->send(env);
  // Acknowledged only now: a worker that dies before this point leaves the message to be
  // delivered again (the decode worker still expects the push until its deadline).
  if (job.queued) (void)job.queued->ack();
}

void PrefillServer::pull_loop() {
  const std::string& worker_id = core_->options.worker_id;
  const Lifecycle& lifecycle = core_->lifecycle;
  bool reported_down = false;
  while (!lifecycle.stop.load() && !lifecycle.stop_requested()) {
    if (core_->counters.prefills_in_flight.load() >= core_->options.max_pulled_prefills) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    auto pulled = core_->queue->pull(200);
    if (!pulled.ok()) {
      if (!reported_down) {
        spdlog::warn("event=prefill_queue_unavailable worker_id={} reason=\"{}\"; retrying", worker_id,
                     pulled.status().message());
        reported_down = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      continue;
    }
    if (reported_down) spdlog::info("event=prefill_queue_reachable worker_id={}", worker_id);
    reported_down = false;
    std::shared_ptr<cluster::PrefillQueue::Message> m = std::move(*pulled);
    if (!m) continue;
    rpc::pb::Envelope env;
    if (!env.ParseFromString(m->data()) || !env.has_remote_prefill()) {
      spdlog::warn("event=prefill_queue_bad_message worker_id={} bytes={}", worker_id, m->data().size());
      (void)m->ack();
      continue;
    }
    const rpc::pb::RemotePrefill& rp = env.remote_prefill();
    if (rp.deadline_unix_ms() > 0 && unix_now_ms() > rp.deadline_unix_ms()) {
      // Its decode worker has prefilled locally by now; our push would be refused anyway.
      spdlog::info("event=prefill_skipped_expired request_id={} delivered={}", rp.request_id(), m->num_delivered());
      (void)m->ack();
      continue;
    }
    Status error;
    auto conn = peers_->get(rp.reply_address(), &error);
    if (!conn) {
      spdlog::warn("event=prefill_reply_unreachable request_id={} reply={} reason=\"{}\"", rp.request_id(),
                   rp.reply_address(), error.message());
      (void)m->nak();
      continue;
    }
    spdlog::info("event=prefill_pulled request_id={} decode_worker={} delivered={}", rp.request_id(),
                 rp.decode_worker_id(), m->num_delivered());
    on_remote_prefill(rp, conn, std::move(m));
  }
}

void PrefillServer::stop_pulling() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
  if (pull_thread_.joinable()) pull_thread_.join();
}

void PrefillServer::stop_pushing() {
  { std::lock_guard<std::mutex> lock(mu_); }
  cv_.notify_all();
  for (auto& t : push_threads_) t.join();
  push_threads_.clear();
}

}  // namespace tandem::worker
