// etcd v3 client over its JSON gateway (HTTP/1.1 POST to /v3/kv/*, /v3/lease/*, /v3/watch; keys and
// values base64 in the JSON), for cluster mode (DESIGN.md §4 "Registry"): plain blocking sockets, no
// gRPC. Two long-lived helpers sit on top:
//   EtcdLease    grants a lease, puts a set of keys under it, keeps it alive, re-grants and re-puts
//                when etcd forgot it (after an outage longer than the TTL), revokes on request;
//   EtcdWatcher  reads a prefix (a snapshot at one revision), then watches it from the next revision;
//                after any error it reconnects and starts again with a fresh snapshot.
//
// Ownership: EtcdClient is a value (endpoints and timeouts; copies share which endpoint answered last);
// each call opens its own connection.
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

namespace tandem::cluster {

// "etcd://host:port[,host:port...]" -> endpoints. InvalidArgument naming the text otherwise.
StatusOr<std::vector<net::Endpoint>> parse_etcd_url(const std::string& url);

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

class EtcdClient {
 public:
  // REQUIRES: endpoints not empty. `timeout_ms` bounds one unary call on one endpoint.
  explicit EtcdClient(std::vector<net::Endpoint> endpoints, int timeout_ms = 2000);

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
  // One POST on one endpoint; the parsed JSON body text of a 200 answer.
  StatusOr<std::string> call(const std::string& path, const std::string& body);
  StatusOr<std::string> call_one(const net::Endpoint& ep, const std::string& path, const std::string& body);

  std::vector<net::Endpoint> endpoints_;
  int timeout_ms_;
  // Index of the endpoint that answered last; shared by copies of this client.
  std::shared_ptr<std::atomic<size_t>> preferred_ = std::make_shared<std::atomic<size_t>>(0);
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
  bool register_all(int64_t lease_id);

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
