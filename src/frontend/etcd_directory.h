// The etcd worker directory (--registry etcd://...): workers list themselves under
// /tandem/<ns>/workers/<role>/<id> (cluster/keys.h), under a lease; this frontend watches that prefix,
// dials each listed worker's rpc address, and routes only to workers still listed. Several frontends
// share the workers, so the load the router weighs is what each worker reports in its heartbeats plus
// what this frontend sent since; the prefill queue is the sum of that over the prefill workers (or the
// NATS stream's depth with --prefill-queue). The router thresholds live under disagg/, where an admin
// change is written so that every frontend applies it from its watch.
//
// The registry port of the embedded directory stays open as well (a worker may still register
// there), hence the base class.
//
// Ownership and thread-safety: see worker_directory.h. Dialers and the watcher are threads of their
// own; what they learn reaches the I/O thread through the PostGate.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cluster/etcd.h"
#include "frontend/embedded_directory.h"

namespace tandem::frontend {

class EtcdDirectory final : public EmbeddedDirectory {
 public:
  EtcdDirectory(DirectoryOptions options, std::shared_ptr<PostGate> gate, std::unique_ptr<net::Listener> registry,
                std::unique_ptr<PrefillQueueDepth> queue);
  ~EtcdDirectory() override;

  void start() override;
  void tick(Clock::time_point now) override;
  void stop_threads() override;
  std::string description() const override { return "etcd:" + prefix_; }
  std::optional<std::map<std::string, int>> listed_members() const override;
  std::string thresholds_source() const override { return "etcd:" + prefix_ + "disagg/"; }
  void store_thresholds(ThresholdChanges changes, std::function<void(Status)> done) override;

 protected:
  bool listed(const WorkerRecord& w) const override;
  void fill_load(const WorkerRecord& w, Candidate* c) const override;
  int counted_prefill_queue(const RoutingPool& pool) const override;
  void on_connection_lost(const WorkerRecord& w) override;

 private:
  // A worker listed in etcd and its connection.
  struct Member {
    std::string id;
    std::string role;
    std::string rpc_address;
    WorkerKey key = 0;      // its connection's record while connected; 0 = not connected
    bool dialing = false;
    bool warned = false;    // unreachable already logged
    Clock::time_point next_dial;
  };

  void on_snapshot(const std::vector<cluster::KeyValue>& kvs);
  void on_events(const std::vector<cluster::WatchEvent>& events);
  void apply_key(const std::string& key, const std::string& value, std::set<std::string>* listed);
  void upsert_member(const std::string& id, const nlohmann::json& record);
  void remove_member(const std::string& id, const char* reason);
  void dial(Member& m);
  void on_dialed(const std::string& id, const std::string& address, StatusOr<std::shared_ptr<rpc::Connection>> dialed);

  const std::string prefix_;  // /tandem/<ns>/
  std::map<std::string, Member> members_;  // by worker id
  std::unique_ptr<cluster::EtcdWatcher> watcher_;
};

}  // namespace tandem::frontend
