// Registration in etcd, cluster mode (see registration.h): the worker's record, and a decoding
// worker's KV descriptor, live under a lease (keys from cluster::key_prefix); frontends that watch etcd
// dial the worker, say hello, and get its heartbeats from then on.
#include <spdlog/spdlog.h>

#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "cluster/etcd.h"
#include "cluster/keys.h"
#include "common/error.h"
#include "worker/registration.h"
#include "worker/remote_prefill_checks.h"

namespace tandem::worker {
namespace {

class EtcdRegistration : public Registration {
 public:
  EtcdRegistration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports, std::vector<net::Endpoint> endpoints)
      : core_(std::move(core)),
        reports_(std::move(reports)),
        endpoints_(std::move(endpoints)),
        key_prefix_(cluster::key_prefix(core_->options.cluster_namespace)),
        descriptor_client_(endpoints_, core_->options.etcd_credentials, 1000) {}

  // The lease is put in place once; its own thread re-grants it after an etcd outage, so the worker
  // stays "connected" (frontends that reach it keep it) whatever etcd does.
  bool connect() override {
    if (lease_) return true;
    const WorkerOptions& options = core_->options;
    std::map<std::string, std::string> keys;
    keys[key_prefix_ + "workers/" + role_name(options.role) + "/" + options.worker_id] = record().dump();
    if (core_->decodes()) keys[key_prefix_ + "kv/" + options.worker_id] = kv_descriptor().dump();
    lease_ = std::make_unique<cluster::EtcdLease>(cluster::EtcdClient(endpoints_, options.etcd_credentials),
                                                  options.lease_ttl_s, keys);
    return true;
  }

  bool connected() const override { return true; }

  void heartbeat() override { send_to_frontends(reports_->delta_heartbeat()); }

  void broadcast(const rpc::pb::Envelope& env) override { send_to_frontends(env); }

  void announce_drain() override {
    rpc::pb::Envelope env;
    env.mutable_drain()->set_worker_id(core_->options.worker_id);
    std::lock_guard<std::mutex> lock(mu_);
    drain_announced_ = true;  // a frontend saying hello from now on hears of it too
    for (const auto& f : frontends_) f->send(env);
  }

  // Revoked rather than left to expire: the record is gone at once, not a TTL later.
  void leave() override {
    if (lease_) lease_->stop(/*revoke=*/true);
  }

  void final_heartbeat() override { heartbeat(); }

  void disconnect() override { leave(); }

  bool can_drain() const override { return true; }

  void on_frontend_hello(const std::shared_ptr<rpc::Connection>& conn, const rpc::pb::FrontendHello& hello) override {
    // The engine's stats are read before taking mu_ (an engine may call back into the worker while
    // holding its own lock). The whole prefix summary is taken and sent under mu_, which every
    // heartbeat round's send takes too, so a delta never overtakes the summary it follows.
    rpc::pb::Envelope beat = reports_->heartbeat();
    std::lock_guard<std::mutex> lock(mu_);
    frontends_.insert(conn);
    conn->send(reports_->registration());
    reports_->add_full_prefix(beat);
    conn->send(beat);
    if (drain_announced_) {
      rpc::pb::Envelope d;
      d.mutable_drain()->set_worker_id(core_->options.worker_id);
      conn->send(d);
    }
    spdlog::info("event=frontend_connected worker_id={} frontend={} peer={}", core_->options.worker_id,
                 hello.frontend_id(), conn->peer());
  }

  bool forget_connection(const std::shared_ptr<rpc::Connection>& conn) override {
    std::lock_guard<std::mutex> lock(mu_);
    return frontends_.erase(conn) > 0;
  }

  // The frontends dialed in: the request plane closes their connections.
  std::vector<std::shared_ptr<rpc::Connection>> connections() const override { return {}; }

  Status check_decode_worker(const rpc::pb::RemotePrefill& rp) override {
    const std::string& peer_id = rp.decode_worker_id();
    if (peer_id.empty()) return Status::Ok();
    nlohmann::json d;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = kv_descriptors_.find(peer_id);
      if (it != kv_descriptors_.end()) d = it->second;
    }
    if (d.is_null()) {
      auto r = descriptor_client_.get(key_prefix_ + "kv/" + peer_id);
      // etcd down: the geometry check still guards the copy; do not fail the request for it.
      if (!r.ok()) return Status::Ok();
      if (r->kvs.empty()) return Status::NotFound("decode worker " + peer_id + " has no KV descriptor in etcd");
      d = nlohmann::json::parse(r->kvs[0].value, nullptr, false);
      if (!d.is_object()) return Status::Corruption("the KV descriptor of " + peer_id + " is not JSON");
      spdlog::info("event=kv_descriptor_read peer={} descriptor={}", peer_id, d.dump());
      std::lock_guard<std::mutex> lock(mu_);
      kv_descriptors_[peer_id] = d;
    }
    if (!kv_descriptor_matches(d, rp)) {
      std::lock_guard<std::mutex> lock(mu_);
      kv_descriptors_.erase(peer_id);  // it may have restarted: read it again next time
      return Status::InvalidArgument("remote prefill from " + peer_id + " disagrees with its KV descriptor in etcd");
    }
    return Status::Ok();
  }

 private:
  nlohmann::json record() const {
    const rpc::pb::Envelope env = reports_->registration();
    const auto& r = env.register_();
    return {{"worker_id", r.worker_id()}, {"role", role_name(core_->options.role)}, {"model", r.model()},
            {"rpc_address", r.rpc_address()}, {"transfer_address", r.transfer_address()},
            {"num_kv_blocks", r.num_kv_blocks()}, {"block_size", r.block_size()}, {"max_model_len", r.max_model_len()},
            {"vocab_size", r.vocab_size()}, {"pid", r.pid()}};
  }

  nlohmann::json kv_descriptor() const {
    const auto& spec = core_->engine->backend().kv_cache_spec();
    return {{"worker_id", core_->options.worker_id}, {"backend", core_->transfer->name()},
            {"transfer_address", core_->transfer->address()}, {"num_layers", spec.num_layers},
            {"num_blocks", spec.num_blocks}, {"block_size", spec.block_size},
            {"block_bytes", static_cast<int64_t>(spec.block_bytes())}, {"kv_cache_dtype", backend::kv_dtype_name(spec.dtype)}};
  }

  void send_to_frontends(const rpc::pb::Envelope& env) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& f : frontends_) f->send(env);
  }

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<Reports> reports_;
  const std::vector<net::Endpoint> endpoints_;
  const std::string key_prefix_;
  // Reads peers' KV descriptors on the prefill path, so with a short timeout; one client for the
  // worker's life, so that its etcd token is taken once, not per read.
  cluster::EtcdClient descriptor_client_;
  std::unique_ptr<cluster::EtcdLease> lease_;  // run loop's thread only
  // mu_ guards the frontends and what they were told, and the KV descriptors read. Lock order:
  // mu_, then Reports' lock.
  mutable std::mutex mu_;
  std::set<std::shared_ptr<rpc::Connection>> frontends_;   // GUARDED_BY(mu_): frontends that dialed in
  bool drain_announced_ = false;                           // GUARDED_BY(mu_)
  std::map<std::string, nlohmann::json> kv_descriptors_;  // GUARDED_BY(mu_): decode workers' kv/<id>
};

}  // namespace

std::shared_ptr<Registration> make_etcd_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports) {
  auto endpoints = cluster::parse_etcd_url(core->options.registry);
  if (!endpoints.ok()) throw Error("--registry: " + endpoints.status().message());
  if (cluster::etcd_url_uses_tls(core->options.registry) != (core->options.etcd_credentials.tls != nullptr)) {
    throw Error("--registry " + core->options.registry + ": etcds:// and a TLS context (--etcd-ca, --etcd-cert, "
                "--etcd-key) go together");
  }
  return std::make_shared<EtcdRegistration>(std::move(core), std::move(reports), std::move(*endpoints));
}

}  // namespace tandem::worker
