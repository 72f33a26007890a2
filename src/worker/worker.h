// Worker: one engine behind the request plane, in one of three roles (DESIGN.md §2):
//   prefill  serves RemotePrefill from decode workers: prefills (kPrefillOnly), pushes the prompt's
//            KV into the decode worker's reserved blocks, returns the first token;
//   decode   serves Generate from the frontend: prefills locally or asks a prefill worker, then decodes;
//   both     either of the above (aggregated serving).
// It registers with the frontend's embedded registry and heartbeats its load; it reconnects when the
// frontend goes away, and the requests of a lost connection are aborted, freeing their blocks.
// Cluster mode (`registry` = etcd://...): it registers in etcd under a lease instead
// (/tandem/NS/workers/<role>/<id>, and /tandem/NS/kv/<id> for a decoding worker), frontends that
// watch etcd dial it, and it heartbeats to each of them; SIGTERM revokes the lease, then drains.
//
// Thread-safety: run() blocks the calling thread; request_stop() may be called from any thread
// (a signal handler's thread included, through an atomic).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "cluster/etcd.h"
#include "engine/engine.h"
#include "transfer/transfer.h"

namespace tandem::worker {

enum class Role { kPrefill, kDecode, kBoth };
// "prefill", "decode", "both"; throws tandem::Error for anything else.
Role parse_role(const std::string& text);
const char* role_name(Role role);

struct WorkerOptions {
  Role role = Role::kBoth;
  std::string model_name;        // the name the frontend serves it under
  std::vector<std::string> model_aliases;  // further names requests may use for it
  std::string frontend;          // host:port of the frontend's registry (embedded registry)
  std::string registry;          // "etcd://host:port[,...]": cluster mode; empty = the embedded registry
  cluster::EtcdCredentials etcd_credentials;  // --etcd-user, --etcd-password-file (no user: none)
  std::string cluster_namespace = "default";  // --namespace: keys live under /tandem/<ns>/
  int lease_ttl_s = 10;          // --lease-ttl: a killed worker vanishes from etcd this long after
  std::string prefill_queue;     // "nats://...": remote prefills through the JetStream queue
  int prefill_queue_ack_wait_ms = 10000;  // a pulled prefill not acknowledged this long is redelivered
  int max_pulled_prefills = 4;   // a prefill worker pulls only while it holds fewer
  std::string host = "127.0.0.1";  // address peers reach this worker on
  uint16_t rpc_port = 0;         // remote prefills from decode workers (0 = ephemeral)
  uint16_t transfer_port = 0;    // KV pushes into this worker (0 = ephemeral)
  // KV transport (transfer::create_transfer_backend): "auto" = CUDA IPC with peers on this host whose
  // GPU this one can reach, TCP otherwise; "tcp" = never CUDA IPC; "cuda_ipc" = require device memory.
  std::string kv_transfer = "auto";
  std::string worker_id;         // default "<role>-<pid>"
  int heartbeat_ms = 1000;
  int reconnect_ms = 300;
  int dial_timeout_ms = 2000;
  int remote_prefill_timeout_ms = 30000;  // default deadline of a remote prefill (prefill + push)
  int transfer_timeout_ms = 10000;        // deadline of one KV push
  int drain_timeout_ms = 30000;           // on a stop request, finish held requests up to this long
  bool prefix_caching = true;             // false: tell the frontends not to route by prefix overlap
};

class Worker {
 public:
  // Throws tandem::Error if a listener cannot be opened.
  Worker(WorkerOptions options, std::unique_ptr<engine::Engine> engine);
  ~Worker();
  // Registers, serves, re-registers after a lost frontend; returns after request_stop().
  void run();
  // The first call drains (leaves the registry, finishes what it holds up to drain_timeout_ms, then
  // run() returns); a second call stops at once.
  void request_stop();
  // Non-OK once the engine's device failed (Backend::device_health): the worker then drains and run()
  // returns; the caller should exit with a failure status so that a supervisor restarts the worker.
  Status device_failure() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The backend's KV pools as the transfer layer's KvMemory.
std::shared_ptr<transfer::KvMemory> backend_kv_memory(backend::Backend& backend);

}  // namespace tandem::worker
