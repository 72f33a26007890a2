// Worker (see worker.h): builds the worker's parts and runs the one loop that registers, heartbeats
// and drains, whichever registry it uses. The parts (each owns its state and its lock):
//   core.h            options, engine, KV transport, queue, counters, stop/drain flags (shared by all)
//   request_plane.*   the listener and the dispatch of request-plane messages; Generate and Abort
//   outputs.*         which connection a request's outputs go to; engine submissions routed there
//   remote_prefill.*  decode side of a remote prefill (reserve KV, ask, wait, fall back)
//   kv_reservation.*  the RAII guard of the KV blocks reserved for a remote prefill
//   prefill_server.*  prefill side (prefill, push the KV, answer; pull from the queue)
//   peers.*           connections this worker dialed to other workers
//   registration*     embedded registry or etcd: being known to the frontends, heartbeats, drain
//   reports.*         Register and heartbeat messages, the prefix summary
//   kv_events.*       KV events: the prefix cache's stores and evictions, snapshots on request
//   kv_memory.cpp     the backend's KV pools as transfer::KvMemory
// Locks: each part's mutex guards only that part's tables (see its header), and no part calls into
// the engine under it (reading the backend's fixed geometry aside). Two nest, always in this order:
// the run loop's Lifecycle mutex, then the embedded registration's (its wait asks connected()); the
// etcd registration's, then Reports' (a hello sends the whole prefix summary).
#include "worker/worker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "common/error.h"
#include "common/socket.h"
#include "worker/core.h"
#include "worker/outputs.h"
#include "worker/prefill_server.h"
#include "worker/kv_events.h"
#include "worker/registration.h"
#include "worker/remote_prefill.h"
#include "worker/reports.h"
#include "worker/request_plane.h"

namespace tandem::worker {

Role parse_role(const std::string& text) {
  if (text == "prefill") return Role::kPrefill;
  if (text == "decode") return Role::kDecode;
  if (text == "both") return Role::kBoth;
  throw Error("--role: unknown role '" + text + "' (use prefill, decode or both)");
}

const char* role_name(Role role) {
  switch (role) {
    case Role::kPrefill: return "prefill";
    case Role::kDecode: return "decode";
    case Role::kBoth: return "both";
  }
  return "?";
}

struct Worker::Impl {
  std::shared_ptr<Core> core;
  std::shared_ptr<Outputs> outputs;
  std::shared_ptr<Reports> reports;
  std::shared_ptr<RemotePrefillClient> remote_prefill;
  std::shared_ptr<RequestPlane> plane;
  std::shared_ptr<Registration> registration;
  std::shared_ptr<KvEventPublisher> kv_events;
  std::shared_ptr<PrefillServer> prefill_server;
  std::unique_ptr<net::Listener> listener;  // handed to `plane` by run()

  mutable std::mutex failure_mu;
  Status device_failure;  // GUARDED_BY(failure_mu): set once the engine's device failed

  // Drain first when there is a frontend to tell; a second request (or no frontend) stops at once.
  void request_stop() {
    Lifecycle& lifecycle = core->lifecycle;
    const bool can_drain = registration->can_drain();
    if (lifecycle.stop_requests.fetch_add(1) > 0 || !can_drain) lifecycle.stop.store(true);
    lifecycle.wake();
  }

  // On the engine thread, once: the engine has failed every request it held. The worker leaves like
  // on SIGTERM (the frontends stop routing here, requests still in flight get the engine's refusal),
  // and run() returns so the process exits and its supervisor starts a fresh one on a new context.
  void on_device_lost(const Status& failure) {
    {
      std::lock_guard<std::mutex> lock(failure_mu);
      device_failure = failure;
    }
    spdlog::error("event=worker_device_failed worker_id={} error=\"{}\" action=exit", core->options.worker_id,
                  failure.message());
    request_stop();
  }

  // Nothing held: no request, no remote prefill either way, no KV push queued.
  bool idle() const {
    if (!outputs->empty() || !remote_prefill->idle() || !prefill_server->idle()) return false;
    const engine::EngineStats s = core->engine->stats();
    const Counters& c = core->counters;
    return c.prefills_in_flight.load() == 0 && c.reservations.load() == 0 && s.num_running == 0 && s.num_waiting == 0;
  }

  void run() {
    Lifecycle& lifecycle = core->lifecycle;
    const WorkerOptions& options = core->options;
    prefill_server->start();
    const uint16_t port = listener->port();
    plane->start(std::move(listener));
    spdlog::info("event=worker_started worker_id={} role={} rpc_port={} kv_transport={} transfer={}", options.worker_id,
                 role_name(options.role), port, core->transfer->name(), core->transfer->address());
    bool drain_announced = false;
    Clock::time_point drain_deadline;
    while (!lifecycle.stop.load()) {
      if (!registration->connect()) {
        lifecycle.wait_for(std::chrono::milliseconds(options.reconnect_ms), [&] { return lifecycle.stop.load(); });
        continue;
      }
      while (!lifecycle.stop.load() && registration->connected()) {
        lifecycle.wait_for(std::chrono::milliseconds(drain_announced ? 50 : options.heartbeat_ms), [&] {
          return lifecycle.stop.load() || !registration->connected() || (lifecycle.stop_requested() && !drain_announced);
        });
        if (lifecycle.stop.load()) break;
        if (lifecycle.stop_requested() && !drain_announced) {
          // Tell the frontends first (they stop routing here at once), then leave the registry.
          registration->announce_drain();
          drain_announced = true;
          drain_deadline = Clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
          lifecycle.drain_started_ms.store(steady_now_ms());
          spdlog::info("event=draining worker_id={} deadline_ms={}", options.worker_id, options.drain_timeout_ms);
          registration->leave();
        }
        if (drain_announced && ((idle() && lifecycle.drain_grace_over()) || Clock::now() > drain_deadline)) {
          spdlog::info("event=drained worker_id={} idle={}", options.worker_id, idle());
          registration->final_heartbeat();
          lifecycle.stop.store(true);
          break;
        }
        registration->heartbeat();
      }
      if (lifecycle.stop_requested() && !drain_announced && registration->connected()) {
        // Stopped at once (a second signal before this loop woke): the frontends still hear of it before
        // the connection closes, so they stop routing here rather than send into a closing connection.
        registration->announce_drain();
        drain_announced = true;
        spdlog::info("event=draining worker_id={} deadline_ms=0", options.worker_id);
      }
      registration->disconnect();
    }
    shutdown();
  }

  void shutdown() {
    std::vector<std::shared_ptr<rpc::Connection>> closing = registration->connections();
    for (auto& c : remote_prefill->peers()->all()) closing.push_back(c);
    for (auto& c : plane->connections()) closing.push_back(c);
    for (auto& c : closing) c->close();
    prefill_server->stop_pulling();
    plane->close_listener();
    core->transfer->shutdown();
    prefill_server->stop_pushing();
    // Their reader threads are detached and run the close handlers (which take the parts' locks): wait
    // for them, so none is still finishing when main returns and the logger is torn down.
    for (auto& c : closing) c->wait_closed(std::chrono::seconds(2));
  }
};

Worker::Worker(WorkerOptions options, std::unique_ptr<engine::Engine> engine) : impl_(std::make_shared<Impl>()) {
  if (options.worker_id.empty()) options.worker_id = std::string(role_name(options.role)) + "-" + std::to_string(getpid());
  auto core = std::make_shared<Core>();
  core->options = std::move(options);
  core->engine = std::move(engine);
  // First, before any port or thread: a NATS server that refuses this worker's credentials ends the
  // start with an error naming the flag.
  if (!core->options.prefill_queue.empty()) {
    cluster::PrefillQueueOptions q;
    q.url = core->options.prefill_queue;
    q.cluster_namespace = core->options.cluster_namespace;
    q.ack_wait_ms = core->options.prefill_queue_ack_wait_ms;
    auto queue = cluster::PrefillQueue::connect(q);
    if (!queue.ok()) throw Error("--prefill-queue: " + queue.status().message());
    core->queue = std::move(*queue);
  }
  std::weak_ptr<Impl> weak = impl_;
  core->engine->set_on_device_lost([weak](const Status& failure) {
    if (auto self = weak.lock()) self->on_device_lost(failure);
  });
  core->kv_memory = backend_kv_memory(core->engine->backend());
  core->transfer = transfer::create_transfer_backend(core->options.kv_transfer, core->kv_memory, core->options.host,
                                                     core->options.transfer_port);
  auto listener = net::Listener::bind(core->options.host, core->options.rpc_port);
  if (!listener.ok()) throw Error("--rpc-port: " + listener.status().message());
  impl_->listener = std::move(*listener);
  core->rpc_address = core->options.host + ":" + std::to_string(impl_->listener->port());

  Impl& w = *impl_;
  w.core = core;
  w.outputs = std::make_shared<Outputs>(core);
  w.reports = std::make_shared<Reports>(core);
  w.remote_prefill = RemotePrefillClient::create(core, w.outputs);
  w.plane = std::make_shared<RequestPlane>(core, w.outputs, w.reports, w.remote_prefill);
  w.registration = make_registration(core, w.reports, w.plane->registration_hooks());
  w.prefill_server = std::make_shared<PrefillServer>(core, w.remote_prefill->peers(), w.registration);
  w.kv_events = std::make_shared<KvEventPublisher>(core);
  w.kv_events->start(w.registration);
  w.plane->attach(w.registration, w.prefill_server, w.kv_events);

}

Worker::~Worker() = default;

void Worker::run() { impl_->run(); }

void Worker::request_stop() { impl_->request_stop(); }

Status Worker::device_failure() const {
  std::lock_guard<std::mutex> lock(impl_->failure_mu);
  return impl_->device_failure;
}

}  // namespace tandem::worker
