// Registration: how a worker makes itself known to the frontends and keeps them informed (DESIGN.md §4
// "Registry"). One implementation per registry; the worker's run loop (worker.cpp) is the same for both:
//   connect -> every heartbeat_ms: heartbeat -> on a stop request: announce_drain, leave ->
//   once drained: final_heartbeat -> disconnect.
//   embedded  (registration_embedded.cpp) the worker dials the frontend's registry (--frontend),
//             registers and heartbeats over that one connection, and dials again when it is lost;
//   etcd      (registration_etcd.cpp) the worker puts its record (and, decoding, its KV descriptor)
//             under a lease in etcd (cluster::key_prefix), the frontends that watch etcd dial it and
//             say hello, and it heartbeats to each of them; leaving revokes the lease.
//
// Ownership: held by shared_ptr (the worker and its prefill side); the hooks it calls belong to the
// request plane and hold it weakly.
// Thread-safety: connect, connected, heartbeat, announce_drain, leave, final_heartbeat and disconnect
// are called by the run loop's thread only; the others from any thread (connection handlers, the
// prefill side, request_stop). Each implementation documents its own lock.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "rpc/connection.h"
#include "worker/core.h"
#include "worker/reports.h"

namespace tandem::worker {

class Registration {
 public:
  struct Hooks {
    // A message from a frontend (on the registry connection).
    std::function<void(rpc::pb::Envelope& env, const std::shared_ptr<rpc::Connection>& conn)> on_message;
    // A frontend connection is gone for good: its requests are aborted, freeing their blocks.
    std::function<void(const std::shared_ptr<rpc::Connection>& conn)> on_frontend_lost;
  };

  virtual ~Registration() = default;

  // Makes the worker known. False when it could not (embedded: the frontend is unreachable); the run
  // loop waits reconnect_ms and calls it again.
  virtual bool connect() = 0;
  // The frontends can still hear from the worker (embedded: its connection is open; etcd: always).
  virtual bool connected() const = 0;
  // One heartbeat round (Reports::delta_heartbeat) to every frontend.
  virtual void heartbeat() = 0;
  // Tells the frontends to stop routing here (a Drain message).
  virtual void announce_drain() = 0;
  // After the announcement: leaves the registry for good (etcd: revokes the lease at once).
  virtual void leave() = 0;
  // Drained: the last heartbeat before the worker exits.
  virtual void final_heartbeat() = 0;
  // Ends what connect() made: the connection was lost or the worker stops.
  virtual void disconnect() = 0;

  // Sends `env` to every frontend connected now (KV events); nothing when none is.
  virtual void broadcast(const rpc::pb::Envelope& env) = 0;
  // A stop request should drain first: some frontend can be told (otherwise it stops at once).
  virtual bool can_drain() const = 0;
  // A frontend dialed in and said hello (etcd: it found the worker's record).
  virtual void on_frontend_hello(const std::shared_ptr<rpc::Connection>& conn, const rpc::pb::FrontendHello& hello) = 0;
  // An incoming connection closed; true when it was a frontend's (its requests are to be aborted).
  virtual bool forget_connection(const std::shared_ptr<rpc::Connection>& conn) = 0;
  // Connections shutdown must close (the ones this registration dialed).
  virtual std::vector<std::shared_ptr<rpc::Connection>> connections() const = 0;
  // Prefill side: the RemotePrefill's destination agrees with what its decode worker registered
  // (etcd: the KV descriptor, read once per peer). A stale or foreign sender is refused before any
  // KV moves.
  virtual Status check_decode_worker(const rpc::pb::RemotePrefill& rp) = 0;
};

// The embedded registry's registration (options.frontend).
std::shared_ptr<Registration> make_embedded_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports,
                                                         Registration::Hooks hooks);
// etcd's, for `registry` = "etcd://host:port[,...]" (frontends dial in: their connections are the
// request plane's, so no hooks). Throws tandem::Error ("--registry: ...") for a malformed URL.
std::shared_ptr<Registration> make_etcd_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports);

// The one chosen by core->options.registry (empty: embedded). Throws as make_etcd_registration.
std::shared_ptr<Registration> make_registration(std::shared_ptr<Core> core, std::shared_ptr<Reports> reports,
                                                Registration::Hooks hooks);

}  // namespace tandem::worker
