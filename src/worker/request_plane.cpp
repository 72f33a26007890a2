// Message handling on the worker's request plane (see request_plane.h).
#include "worker/request_plane.h"

#include <spdlog/spdlog.h>

#include "worker/convert.h"

namespace tandem::worker {

RequestPlane::RequestPlane(std::shared_ptr<Core> core, std::shared_ptr<Outputs> outputs,
                           std::shared_ptr<Reports> reports, std::shared_ptr<RemotePrefillClient> remote_prefill)
    : core_(std::move(core)),
      outputs_(std::move(outputs)),
      reports_(std::move(reports)),
      remote_prefill_(std::move(remote_prefill)) {}

void RequestPlane::attach(std::shared_ptr<Registration> registration, std::shared_ptr<PrefillServer> prefill_server,
                          std::shared_ptr<KvEventPublisher> kv_events) {
  registration_ = std::move(registration);
  prefill_server_ = std::move(prefill_server);
  kv_events_ = std::move(kv_events);
}

Registration::Hooks RequestPlane::registration_hooks() {
  std::weak_ptr<RequestPlane> weak = shared_from_this();
  Registration::Hooks hooks;
  hooks.on_message = [weak](rpc::pb::Envelope& env, const std::shared_ptr<rpc::Connection>& conn) {
    if (auto self = weak.lock()) self->on_message(env, conn);
  };
  hooks.on_frontend_lost = [weak](const std::shared_ptr<rpc::Connection>& conn) {
    if (auto self = weak.lock()) self->abort_owned_by(conn);
  };
  return hooks;
}

void RequestPlane::start(std::unique_ptr<net::Listener> listener) {
  listener_ = std::move(listener);
  std::weak_ptr<RequestPlane> weak = shared_from_this();
  listener_->start([weak](int fd, std::string peer) {
    auto self = weak.lock();
    if (!self) return;
    auto conn = rpc::Connection::adopt(fd, peer);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->incoming_.insert(conn);
    }
    std::weak_ptr<rpc::Connection> weak_conn = conn;
    conn->start(
        [weak, weak_conn](rpc::pb::Envelope& env) {
          auto self = weak.lock();
          auto c = weak_conn.lock();
          if (self && c) self->on_message(env, c);
        },
        [weak, weak_conn](const Status&) {
          auto self = weak.lock();
          auto c = weak_conn.lock();
          if (!self || !c) return;
          {
            std::lock_guard<std::mutex> lock(self->mu_);
            self->incoming_.erase(c);
          }
          // A frontend that went away takes its requests with it: free their blocks.
          if (self->registration_->forget_connection(c)) self->abort_owned_by(c);
        });
  });
}

void RequestPlane::close_listener() {
  if (listener_) listener_->close();
}

std::vector<std::shared_ptr<rpc::Connection>> RequestPlane::connections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {incoming_.begin(), incoming_.end()};
}

void RequestPlane::on_message(rpc::pb::Envelope& env, const std::shared_ptr<rpc::Connection>& conn) {
  switch (env.msg_case()) {
    case rpc::pb::Envelope::kGenerate: on_generate(env.generate(), conn); break;
    case rpc::pb::Envelope::kAbort: on_abort(env.abort().request_id()); break;
    case rpc::pb::Envelope::kRemotePrefill: prefill_server_->on_remote_prefill(env.remote_prefill(), conn); break;
    case rpc::pb::Envelope::kRemotePrefillResult: remote_prefill_->on_result(env.remote_prefill_result()); break;
    case rpc::pb::Envelope::kFrontendHello: registration_->on_frontend_hello(conn, env.frontend_hello()); break;
    case rpc::pb::Envelope::kKvSnapshotRequest: kv_events_->send_snapshot(conn); break;
    case rpc::pb::Envelope::kRegisterAck:
      if (!env.register_ack().ok()) spdlog::error("event=register_refused reason=\"{}\"", env.register_ack().error());
      break;
    default: break;
  }
}

void RequestPlane::on_generate(const rpc::pb::Generate& g, const std::shared_ptr<rpc::Connection>& conn) {
  engine::Request request;
  request.request_id = g.request_id();
  request.prompt_token_ids.assign(g.prompt_token_ids().begin(), g.prompt_token_ids().end());
  request.sampling = from_proto(g.sampling());
  request.num_resumed_tokens = g.num_resumed_tokens();
  request.resumed_text_bytes = g.resumed_text_bytes();
  request.choice_index = g.choice_index();
  outputs_->set_owner(g.request_id(), conn);
  if (!core_->decodes()) {
    outputs_->send_error(g.request_id(), Status::InvalidArgument("a prefill worker does not decode"), request.sampling.n);
    return;
  }
  reports_->note_prompt(request.prompt_token_ids);
  // A request already on the wire when the frontends heard of the drain is still served: only
  // after a grace period (the frontends have stopped routing here) is a new one refused.
  const Lifecycle& lifecycle = core_->lifecycle;
  if (lifecycle.stop_requested() && lifecycle.drain_grace_over()) {
    outputs_->send_error(g.request_id(), Status::Unavailable("worker " + core_->options.worker_id + " is draining"),
                         request.sampling.n);
    return;
  }
  if (g.remote_prefill_address().empty() && !g.remote_prefill_queue()) {
    rpc::pb::PrefillInfo info;
    info.set_present(true);
    outputs_->submit(std::move(request), info);
    return;
  }
  const int timeout_ms =
      g.remote_prefill_timeout_ms() > 0 ? g.remote_prefill_timeout_ms() : core_->options.remote_prefill_timeout_ms;
  remote_prefill_->start(std::move(request), g.remote_prefill_address(), timeout_ms);
}

void RequestPlane::on_abort(const std::string& request_id) {
  if (!remote_prefill_->abort(request_id)) core_->engine->abort(request_id);
}

void RequestPlane::abort_owned_by(const std::shared_ptr<rpc::Connection>& conn) {
  for (const auto& id : outputs_->owned_by(conn)) on_abort(id);
}

}  // namespace tandem::worker
