// WorkerDirectory: the frontend's view of its workers (DESIGN.md §4 "Registry"): who is there, what
// each serves and carries, how to reach it, and how deep the remote-prefill queue is. One
// implementation per --registry mode, chosen once by make_worker_directory():
//   embedded  workers dial the registry port, register and heartbeat (embedded_directory.h);
//   etcd      workers listed under /tandem/<ns>/workers/ are dialed (etcd_directory.h).
// Either counts the prefill queue itself or, with --prefill-queue, reads its depth from NATS. The
// request lifecycle (request_lifecycle.h) asks the directory and never which mode it runs in; tests
// give it a fake directory.
//
// Ownership: a directory owns its workers' connections and its own threads (dialers, the etcd watcher,
// the NATS poller).
// Thread-safety: every method runs on the frontend's I/O thread, and so do the DirectoryEvents it
// raises; its threads reach that thread through the PostGate it was given.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cluster/etcd.h"
#include "common/socket.h"
#include "common/status.h"
#include "frontend/router.h"
#include "rpc/messages.pb.h"

namespace tandem::frontend {

struct PostGate;

using Clock = std::chrono::steady_clock;
// One connection to a worker, unique for the frontend's life; 0 = none.
using WorkerKey = uint64_t;

// One worker as the directory knows it, valid during the call that shows it.
struct WorkerView {
  WorkerKey key = 0;
  const rpc::pb::Register* info = nullptr;        // what it registered with (empty until it has)
  const rpc::pb::Heartbeat* heartbeat = nullptr;  // its last heartbeat
  bool registered = false;
  bool routable = false;  // registered, not draining, and (etcd) still listed: gets new requests
  bool draining = false;
  int outstanding = 0;    // decode requests this frontend has on it

  bool can_decode() const { return info->role() == rpc::pb::ROLE_DECODE || info->role() == rpc::pb::ROLE_BOTH; }
};

// The routable workers that serve one model, as the router sees them (router.h), and the prefill
// queue's depth as it stands for this request.
struct RoutingPool {
  std::vector<Candidate> candidates;
  std::vector<WorkerKey> keys;      // keys[i] is the worker behind candidates[i]
  int prefill_queue = 0;            // remote prefills in flight, for --max-prefill-queue
  bool remote_prefill_up = true;    // false: the prefill queue is unreachable; prefill locally
};

// What the directory reports to the request lifecycle, on the I/O thread.
struct DirectoryEvents {
  // An output of a request running on `worker`.
  std::function<void(WorkerKey worker, const rpc::pb::Output& output)> output;
  // `worker`'s connection ended; `requests` are the decode requests it carried (as assign()ed), and
  // `name` its worker id (or its peer address when it never registered). The handler fails or
  // reroutes those, and releases the prefill slots held on `worker`. Called before the worker is
  // forgotten, so release_prefill(worker) and unassign(worker, ...) still find it.
  std::function<void(WorkerKey worker, const std::string& name, const Status& reason,
                     const std::vector<std::string>& requests)>
      worker_lost;
  // A router threshold read from the registry (etcd's disagg/ keys): name and value as text, and the
  // registry's name for logs ("etcd").
  std::function<void(const std::string& name, const std::string& value, const char* source)> threshold;
};

class WorkerDirectory {
 public:
  virtual ~WorkerDirectory() = default;

  // ---- life of the directory (the frontend's run(), stop() and destructor) ----
  // REQUIRES: set before start().
  virtual void set_events(DirectoryEvents events) = 0;
  // Starts accepting registrations, watching etcd and polling NATS, as the mode has it.
  virtual void start() = 0;
  // Periodic (~100 ms): closes workers silent past the heartbeat timeout (their requests are then
  // reported lost), dials listed workers that are not connected.
  virtual void tick(Clock::time_point now) = 0;
  // The frontend stops: the registry closes and every worker connection with it.
  virtual void close() = 0;
  // Stops the directory's threads (watcher, poller) and the registry listener.
  virtual void stop_threads() = 0;
  // Closes every connection and waits (a little) for their reader threads to end.
  // REQUIRES: the gate closed, so that nothing more reaches the I/O thread.
  virtual void shutdown() = 0;
  virtual uint16_t registry_port() const = 0;
  // "embedded", or "etcd:<key prefix>" (logged at start).
  virtual std::string description() const = 0;

  // ---- the request path ----
  // The routable workers serving `model` (every routable worker when a --served-model-name is set),
  // except `excluded` (0: none), with `prompt`'s prefix overlap on each.
  virtual RoutingPool pool(const std::string& model, std::span<const int32_t> prompt, WorkerKey excluded) const = 0;
  // What the worker registered with; nullptr once it is gone.
  virtual const rpc::pb::Register* info(WorkerKey worker) const = 0;
  // False when the worker is gone or its connection is closed.
  virtual bool send(WorkerKey worker, const rpc::pb::Envelope& message) = 0;
  // Tells a decode worker where its remote prefill goes: to `prefill_worker` directly, or onto the
  // NATS queue (any prefill worker takes it).
  virtual void address_remote_prefill(WorkerKey prefill_worker, rpc::pb::Generate* generate) const = 0;
  // The worker now holds `prompt` in its prefix cache (unless it runs without one).
  virtual void note_prompt(WorkerKey worker, std::span<const int32_t> prompt) = 0;
  // The decode request `request_id` with `prompt` was sent to `worker`: until unassign(), its prompt
  // blocks count as the worker's decode load and as cached there (the KV index's pending entries, so
  // that a burst of one prefix does not scatter before the worker's events report it).
  virtual void note_routed(WorkerKey worker, const std::string& request_id, std::span<const int32_t> prompt) {
    (void)worker, (void)request_id, (void)prompt;
  }
  // Counts a decode request on the worker until unassign(); no-op for a worker that is gone.
  virtual void assign(WorkerKey worker, const std::string& request_id) = 0;
  virtual void unassign(WorkerKey worker, const std::string& request_id) = 0;
  // Counts a remote prefill routed to `prefill_worker` in the queue's depth. Returns the slot to hand
  // to release_prefill() at the request's first output: `prefill_worker` itself (so that the slots
  // held on a lost worker are known by its key), or 0 when nothing is held here (the NATS queue
  // holds it).
  virtual WorkerKey hold_prefill(WorkerKey prefill_worker) = 0;
  // REQUIRES: `slot` came from hold_prefill() and was not released yet.
  virtual void release_prefill(WorkerKey slot) = 0;

  // ---- reading, for /health, /v1/models and /metrics ----
  virtual void for_each_worker(const std::function<void(const WorkerView&)>& visit) const = 0;
  // tandem_prefill_queue_depth: the NATS stream's depth, or remote prefills held here.
  virtual double prefill_queue_gauge() const = 0;
  // Workers listed in the registry, by role (etcd); nullopt when the registry lists none (embedded).
  virtual std::optional<std::map<std::string, int>> listed_members() const = 0;

  // ---- router thresholds shared through the registry ----
  // Where the thresholds are kept besides this process ("" when only here).
  virtual std::string thresholds_source() const = 0;
  // Stores changed thresholds where every frontend sees them; `done` runs on the I/O thread with the
  // outcome (at once when there is no such place): Unavailable, with a message for the client, when
  // the registry did not take them.
  virtual void store_thresholds(ThresholdChanges changes, std::function<void(Status)> done) = 0;
};

struct DirectoryOptions {
  std::string registry_host = "127.0.0.1";
  uint16_t registry_port = 0;
  int heartbeat_timeout_ms = 5000;
  std::vector<std::string> served_model_name;  // empty = route by the model names workers register with
  std::vector<net::Endpoint> etcd;     // non-empty: the etcd directory
  cluster::EtcdCredentials etcd_credentials;  // etcd's user and password (no user: none)
  std::string cluster_namespace = "default";
  std::string frontend_id;
  std::string prefill_queue;           // "nats://...": the prefill queue's depth comes from NATS
};

// Binds the registry port (throws tandem::Error "--registry-port: ..." if it cannot) and connects to
// the prefill queue when one is given (throws "--prefill-queue: ..."). `gate` carries the directory's
// threads to the I/O thread.
std::unique_ptr<WorkerDirectory> make_worker_directory(const DirectoryOptions& options, std::shared_ptr<PostGate> gate);

// The model names served. The frontend's --served-model-name, when given, overrides the workers'
// names: exactly those names, in the order given, each reaching every routable worker. Otherwise the
// names the routable workers that can decode registered (their model and its aliases), sorted,
// without duplicates; a request naming one goes to the workers that registered it.
std::vector<std::string> served_models(const WorkerDirectory& directory,
                                       const std::vector<std::string>& served_model_name);
// True when a worker registered `model` as its name or one of its aliases.
bool serves_model(const rpc::pb::Register& worker, const std::string& model);
// True when some routable worker can decode.
bool any_decode_worker(const WorkerDirectory& directory);

// "prefill", "decode", "both" (log fields and metric labels).
const char* role_label(rpc::pb::Role role);

}  // namespace tandem::frontend
