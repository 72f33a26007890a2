// The worker's side of the request plane: the listener that decode workers and (cluster mode)
// frontends dial, and the dispatch of every message that arrives, on any connection, to the part that
// owns it: Generate and Abort here, RemotePrefill to the prefill side, RemotePrefillResult to the
// decode side, FrontendHello to the registration, KvSnapshotRequest to the KV event publisher.
//
// Ownership: held by shared_ptr; connection handlers hold it weakly. attach() completes it once, before
// the listener starts.
// Thread-safety: every method from any thread; `mu_` guards the set of accepted connections only.
#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "common/socket.h"
#include "rpc/connection.h"
#include "worker/core.h"
#include "worker/kv_events.h"
#include "worker/outputs.h"
#include "worker/prefill_server.h"
#include "worker/registration.h"
#include "worker/remote_prefill.h"
#include "worker/reports.h"

namespace tandem::worker {

class RequestPlane : public std::enable_shared_from_this<RequestPlane> {
 public:
  RequestPlane(std::shared_ptr<Core> core, std::shared_ptr<Outputs> outputs, std::shared_ptr<Reports> reports,
               std::shared_ptr<RemotePrefillClient> remote_prefill);
  // REQUIRES: called once, before start().
  void attach(std::shared_ptr<Registration> registration, std::shared_ptr<PrefillServer> prefill_server,
              std::shared_ptr<KvEventPublisher> kv_events);

  // The hooks a Registration calls with its frontend's messages and loss.
  Registration::Hooks registration_hooks();

  // Accepts connections on `listener` from here on.
  void start(std::unique_ptr<net::Listener> listener);
  // Stops accepting.
  void close_listener();
  // The connections accepted and still open (shutdown closes them).
  std::vector<std::shared_ptr<rpc::Connection>> connections() const;

  void on_message(rpc::pb::Envelope& env, const std::shared_ptr<rpc::Connection>& conn);
  // Aborts every request whose outputs were going to `conn` (its peer is gone).
  void abort_owned_by(const std::shared_ptr<rpc::Connection>& conn);

 private:
  void on_generate(const rpc::pb::Generate& g, const std::shared_ptr<rpc::Connection>& conn);
  // Waiting on a remote prefill: ends there; otherwise in the engine.
  void on_abort(const std::string& request_id);

  const std::shared_ptr<Core> core_;
  const std::shared_ptr<Outputs> outputs_;
  const std::shared_ptr<Reports> reports_;
  const std::shared_ptr<RemotePrefillClient> remote_prefill_;
  std::shared_ptr<Registration> registration_;    // set once by attach()
  std::shared_ptr<PrefillServer> prefill_server_;  // set once by attach()
  std::shared_ptr<KvEventPublisher> kv_events_;     // set once by attach()
  std::unique_ptr<net::Listener> listener_;
  mutable std::mutex mu_;
  std::set<std::shared_ptr<rpc::Connection>> incoming_;  // GUARDED_BY(mu_): accepted connections
};

}  // namespace tandem::worker
