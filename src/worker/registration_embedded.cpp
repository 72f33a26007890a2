// Registration with the frontend's embedded registry (see registration.h): one connection that the
// worker dials, registers on, and heartbeats over; requests also arrive on it.
#include <spdlog/spdlog.h>

#include "worker/registration.h"

namespace tandem::worker {
namespace {

class EmbeddedRegistration : public Registration {
 public:
  EmbeddedRegistration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports, Hooks hooks)
      : core_(std::move(core)), reports_(std::move(reports)), hooks_(std::move(hooks)) {}

  bool connect() override {
    const WorkerOptions& options = core_->options;
    auto dialed = rpc::Connection::dial(options.frontend, options.dial_timeout_ms, "registry");
    if (!dialed.ok()) {
      spdlog::debug("event=frontend_unreachable frontend={} reason=\"{}\"", options.frontend, dialed.status().message());
      return false;
    }
    auto conn = *dialed;
    std::weak_ptr<rpc::Connection> weak_conn = conn;
    std::weak_ptr<Core> weak_core = core_;
    conn->start(
        [on_message = hooks_.on_message, weak_conn](rpc::pb::Envelope& env) {
          if (auto c = weak_conn.lock()) on_message(env, c);
        },
        [weak_core](const Status&) {
          if (auto core = weak_core.lock()) core->lifecycle.wake();
        });
    conn->send(reports_->registration());
    rpc::pb::Envelope beat = reports_->heartbeat();
    reports_->add_full_prefix_and_restart(beat);
    conn->send(beat);
    spdlog::info("event=registered worker_id={} frontend={}", options.worker_id, options.frontend);
    std::lock_guard<std::mutex> lock(mu_);
    frontend_ = conn;
    return true;
  }

  bool connected() const override {
    auto conn = frontend();
    return conn && conn->is_open();
  }

  void heartbeat() override {
    auto conn = frontend();
    if (conn && conn->is_open()) conn->send(reports_->delta_heartbeat());
  }

  void broadcast(const rpc::pb::Envelope& env) override {
    auto conn = frontend();
    if (conn && conn->is_open()) conn->send(env);
  }

  void announce_drain() override {
    rpc::pb::Envelope env;
    env.mutable_drain()->set_worker_id(core_->options.worker_id);
    if (auto conn = frontend()) conn->send(env);
  }

  void leave() override {}  // the registry forgets the worker with its connection

  void final_heartbeat() override {
    if (auto conn = frontend()) conn->send(reports_->heartbeat());
  }

  void disconnect() override {
    auto conn = frontend();
    if (!conn) return;
    if (!core_->lifecycle.stop.load()) {
      spdlog::warn("event=frontend_lost worker_id={} frontend={}", core_->options.worker_id, core_->options.frontend);
    } else {
      // Leaving: the drain announcement and the final heartbeat go out before the close.
      conn->flush(std::chrono::milliseconds(500));
    }
    conn->close();
    hooks_.on_frontend_lost(conn);
  }

  bool can_drain() const override { return connected(); }

  // Only cluster-mode frontends dial workers (they found them in etcd); the embedded registry's
  // frontend is on the connection the worker dialed.
  void on_frontend_hello(const std::shared_ptr<rpc::Connection>&, const rpc::pb::FrontendHello&) override {}
  bool forget_connection(const std::shared_ptr<rpc::Connection>&) override { return false; }

  std::vector<std::shared_ptr<rpc::Connection>> connections() const override {
    auto conn = frontend();
    if (!conn) return {};
    return {conn};
  }

  Status check_decode_worker(const rpc::pb::RemotePrefill&) override { return Status::Ok(); }

 private:
  std::shared_ptr<rpc::Connection> frontend() const {
    std::lock_guard<std::mutex> lock(mu_);
    return frontend_;
  }

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<Reports> reports_;
  const Hooks hooks_;
  mutable std::mutex mu_;
  std::shared_ptr<rpc::Connection> frontend_;  // GUARDED_BY(mu_): the latest registry connection
};

}  // namespace

std::shared_ptr<Registration> make_embedded_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports,
                                                         Registration::Hooks hooks) {
  return std::make_shared<EmbeddedRegistration>(std::move(core), std::move(reports), std::move(hooks));
}

std::shared_ptr<Registration> make_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports,
                                                Registration::Hooks hooks) {
  if (core->options.registry.empty()) {
    return make_embedded_registration(std::move(core), std::move(reports), std::move(hooks));
  }
  return make_etcd_registration(std::move(core), std::move(reports));
}

}  // namespace tandem::worker
