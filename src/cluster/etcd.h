// etcd v3 client over its JSON gateway (HTTP/1.1 POST to /v3/kv/*, /v3/lease/*, /v3/watch; keys and
// values base64 in the JSON), for cluster mode (DESIGN.md §4 "Registry"): plain blocking sockets, no
// gRPC. Two long-lived helpers sit on top:
//   EtcdLease    grants a lease, puts a set of keys under it, keeps it alive, re-grants and re-puts
//                when etcd forgot it (after an outage longer than the TTL), revokes on request;
//   EtcdWatcher  reads a prefix (a snapshot at one revision), then watches it from the next revision;
//                after any error it reconnects and starts again with a fresh snapshot.
// With etcd's authentication on (--etcd-user, --etcd-password-file), the client takes a token from
// /v3/auth/authenticate and sends it in the Authorization header of every call and watch. For
// etcds:// every connection, watches included, is TLS (security/tls_stream.h): etcd's certificate is
// checked against --etcd-ca (or the system's trust store) and the host dialed, and --etcd-cert/
// --etcd-key are presented to an etcd started with --client-cert-auth.
//
// Ownership: EtcdClient is a value (endpoints, credentials and timeouts; copies share which endpoint
// answered last, and the auth token); each call opens its own connection.
// Thread-safety: EtcdClient's methods may be called from any thread at once. EtcdLease and
// EtcdWatcher own one thread each; their callbacks run on that thread; stop() may be called from
// any thread but not from their own callbacks.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/socket.h"
#include "common/status.h"
#include "security/tls_stream.h"

namespace tandem::cluster {

// "etcd://host:port[,host:port...]" or "etcds://..." (TLS) -> endpoints. InvalidArgument naming the
// text otherwise.
StatusOr<std::vector<net::Endpoint>> parse_etcd_url(const std::string& url);
// True for "etcds://...": etcd is reached over TLS (EtcdCredentials::tls must be set).
bool etcd_url_uses_tls(const std::string& url);

std::string base64_encode(const std::string& bytes);
// InvalidArgument on a character outside the standard alphabet.
StatusOr<std::string> base64_decode(const std::string& text);

struct KeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
  int64_t lease = 0;
};

struct RangeResult {
  std::vector<KeyValue> kvs;
  int64_t revision = 0;  // the store's revision the read saw
};

struct WatchEvent {
  bool deleted = false;  // a DELETE (also a lease's expiry or revocation); value is empty then
  KeyValue kv;
};

// The key just past every key that starts with `prefix` (etcd's range_end for a prefix read).
std::string prefix_end(const std::string& prefix);

// Who this process is to etcd, and how it reaches it. `user`, `password`: for an etcd with
// authentication on (--etcd-user, --etcd-password-file); an empty user: no authentication. `tls`: for
// etcds:// (--etcd-ca, --etcd-cert, --etcd-key, a TlsContext::load_client context); nullptr: plain HTTP.
struct EtcdCredentials {
  std::string user;
  std::string password;
  std::shared_ptr<const security::TlsContext> tls;
};

class EtcdClient {
 public:
  // REQUIRES: endpoints not empty. `timeout_ms` bounds one unary call on one endpoint.
  explicit EtcdClient(std::vector<net::Endpoint> endpoints, int timeout_ms = 2000);
  // With a user, every call carries a token, taken at the first call and shared by copies of this
  // client. When etcd refuses the token (expired after 5 idle minutes, dropped by a password reset,
  // made stale by a change to roles) the client takes a new one and repeats the call once.
  EtcdClient(std::vector<net::Endpoint> endpoints, EtcdCredentials credentials, int timeout_ms = 2000);

  // Takes a fresh token (Ok at once without credentials, and when etcd's authentication is off).
  // InvalidArgument naming the user when etcd refuses the user or password; Unavailable when no
  // endpoint answers. Every call is InvalidArgument, naming the flag, when TLS refuses a certificate:
  // etcd's (--etcd-ca) or this process's (--etcd-cert, --etcd-key).
  Status authenticate();
  // What a process checks at start: that these credentials may read `prefix`. InvalidArgument, saying
  // what to fix, when etcd refuses (the password, a user missing where auth is on, a role without the
  // prefix); Unavailable when etcd does not answer (the caller goes on: its calls retry).
  Status check_access(const std::string& prefix);

  // Each call tries the endpoints in turn, starting with the last one that answered; Unavailable
  // when none does, naming each address tried.
  StatusOr<int64_t> grant_lease(int ttl_seconds);
  // The lease's remaining TTL in seconds; 0 when etcd no longer has the lease (it expired or was
  // revoked), which callers answer with a new grant.
  StatusOr<int64_t> keep_alive(int64_t lease_id);
  Status revoke(int64_t lease_id);
  Status put(const std::string& key, const std::string& value, int64_t lease_id = 0);
  Status delete_key(const std::string& key);
  StatusOr<RangeResult> get(const std::string& key);
  StatusOr<RangeResult> get_prefix(const std::string& prefix);

  // Watches keys starting with `prefix` from `start_revision` until `cancel` turns true (checked
  // every 200 ms) or the stream breaks. Returns Aborted when cancelled, Unavailable when the stream
  // ended or could not start; NotFound ("compacted") when start_revision is no longer available.
  Status watch_prefix(const std::string& prefix, int64_t start_revision,
                      const std::function<void(const std::vector<WatchEvent>&)>& on_events,
                      const std::atomic<bool>& cancel);

  const std::vector<net::Endpoint>& endpoints() const { return endpoints_; }

 private:
  // The token every copy of a client uses. `mu` is held while a new one is taken, so that calls that
  // find the token refused at once take one new token between them, not one each.
  struct AuthSession {
    std::mutex mu;
    std::string token;      // GUARDED_BY(mu); "" before the first authentication
    bool auth_off = false;  // GUARDED_BY(mu): etcd said its authentication is off; no token is sent
  };

  // One POST, with the token (and one renewal of it when refused); the JSON body of a 200 answer.
  StatusOr<std::string> call(const std::string& path, const std::string& body);
  // One POST on each endpoint in turn until one answers; `grpc_code` gets the gateway's error code.
  StatusOr<std::string> call_endpoints(const std::string& path, const std::string& body, const std::string& token,
                                       int* grpc_code);
  StatusOr<std::string> call_one(const net::Endpoint& ep, const std::string& path, const std::string& body,
                                 const std::string& token, int* grpc_code);
  // The token to send ("" without credentials, or with etcd's authentication off); takes the first one.
  StatusOr<std::string> token();
  // Takes a new token unless another call has replaced `refused` meanwhile.
  Status renew_token(const std::string& refused);

  std::vector<net::Endpoint> endpoints_;
  EtcdCredentials credentials_;
  int timeout_ms_;
  // Index of the endpoint that answered last; shared by copies of this client.
  std::shared_ptr<std::atomic<size_t>> preferred_ = std::make_shared<std::atomic<size_t>>(0);
  std::shared_ptr<AuthSession> session_ = std::make_shared<AuthSession>();
};

// A lease with the keys that live under it. The keys are (re)put whenever a lease is (re)granted.
class EtcdLease {
 public:
  // `keys`: key -> value. Starts the keep-alive thread at once; registration happens on it (a
  // worker starts even while etcd is down, and registers when etcd comes up).
  EtcdLease(EtcdClient client, int ttl_seconds, std::map<std::string, std::string> keys);
  ~EtcdLease();
  // Changes (or adds) one key's value; written at once under the current lease when there is one.
  void update(const std::string& key, const std::string& value);
  // Stops keeping the lease alive and, when `revoke`, revokes it (its keys vanish at once).
  void stop(bool revoke);
  bool registered() const { return lease_id_.load() != 0; }

 private:
  void loop();
  Status register_all(int64_t lease_id);

  EtcdClient client_;
  const int ttl_seconds_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> keys_;  // GUARDED_BY(mu_)
  bool stop_ = false;                         // GUARDED_BY(mu_)
  std::atomic<int64_t> lease_id_{0};
  std::thread thread_;
};

// Follows a prefix: on_snapshot with every key (after each (re)connect), then on_events as they
// come. A consumer that keeps state replaces it on a snapshot (reconciles) and patches it on events.
class EtcdWatcher {
 public:
  using SnapshotHandler = std::function<void(const std::vector<KeyValue>&)>;
  using EventsHandler = std::function<void(const std::vector<WatchEvent>&)>;
  EtcdWatcher(EtcdClient client, std::string prefix, SnapshotHandler on_snapshot, EventsHandler on_events);
  ~EtcdWatcher();
  void stop();

 private:
  void loop();

  EtcdClient client_;
  const std::string prefix_;
  SnapshotHandler on_snapshot_;
  EventsHandler on_events_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tandem::cluster
