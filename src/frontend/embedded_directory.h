// The embedded worker directory (--registry embedded): workers dial the frontend's registry port,
// register, heartbeat, and carry their requests over that one connection. The load the router weighs
// is what this frontend routed to each worker, counted here; the prefix caches are the workers' KV
// events in one KvIndex (kv_index.h), or, for a worker that publishes none, the prompts routed to it; so is the prefill queue (remote prefills
// routed and not yet started), unless --prefill-queue reads it from NATS.
//
// EtcdDirectory (etcd_directory.h) extends this class: in cluster mode the registry port stays open
// too, and every connection, however it began, is one WorkerRecord here. Its hooks are the protected
// virtual functions below.
//
// Ownership and thread-safety: see worker_directory.h. The registry's accept thread only allocates a
// key and posts; every record lives on the I/O thread.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "frontend/kv_index.h"
#include "frontend/post_gate.h"
#include "frontend/prefill_queue_depth.h"
#include "frontend/worker_directory.h"
#include "rpc/connection.h"

namespace tandem::frontend {

class EmbeddedDirectory : public WorkerDirectory {
 public:
  // `queue`: null unless --prefill-queue.
  EmbeddedDirectory(DirectoryOptions options, std::shared_ptr<PostGate> gate, std::unique_ptr<net::Listener> registry,
                    std::unique_ptr<PrefillQueueDepth> queue);
  ~EmbeddedDirectory() override;

  void set_events(DirectoryEvents events) override { events_ = std::move(events); }
  void start() override;
  void tick(Clock::time_point now) override;
  void close() override;
  void stop_threads() override;
  void shutdown() override;
  uint16_t registry_port() const override { return registry_->port(); }
  std::string description() const override { return "embedded"; }

  RoutingPool pool(const std::string& model, std::span<const int32_t> prompt, WorkerKey excluded) const override;
  const rpc::pb::Register* info(WorkerKey worker) const override;
  bool send(WorkerKey worker, const rpc::pb::Envelope& message) override;
  void address_remote_prefill(WorkerKey prefill_worker, rpc::pb::Generate* generate) const override;
  void note_prompt(WorkerKey worker, std::span<const int32_t> prompt) override;
  void note_routed(WorkerKey worker, const std::string& request_id, std::span<const int32_t> prompt) override;
  void assign(WorkerKey worker, const std::string& request_id) override;
  void unassign(WorkerKey worker, const std::string& request_id) override;
  WorkerKey hold_prefill(WorkerKey prefill_worker) override;
  void release_prefill(WorkerKey slot) override;

  void for_each_worker(const std::function<void(const WorkerView&)>& visit) const override;
  double prefill_queue_gauge() const override;
  std::optional<std::map<std::string, int>> listed_members() const override { return std::nullopt; }

  std::string thresholds_source() const override { return ""; }
  void store_thresholds(ThresholdChanges changes, std::function<void(Status)> done) override;

 protected:
  struct WorkerRecord {
    WorkerKey key = 0;
    std::shared_ptr<rpc::Connection> conn;
    bool registered = false;
    rpc::pb::Register info;
    rpc::pb::Heartbeat heartbeat;
    Clock::time_point last_seen = Clock::now();
    int outstanding = 0;           // decode requests assigned here
    int prefills_outstanding = 0;  // remote prefills held here
    bool draining = false;         // routes nothing new; finishes what it holds
    std::string member_id;         // etcd: the listed worker this connection was dialed for
    // Routed here since its last heartbeat (not yet in the load it reports): decodes, remote prefills.
    int sent_since_heartbeat = 0;
    int prefills_sent_since_heartbeat = 0;
    std::unique_ptr<PrefixIndex> prefix;  // workers without KV events: the prompts routed here
    std::set<std::string> requests;  // decode requests riding on this worker
    // Decode load in KV blocks: the prompt blocks of the requests routed here (note_routed) and not
    // finished, by request; and those routed since the last heartbeat (etcd's load).
    std::map<std::string, int> request_blocks;
    int load_blocks = 0;
    int blocks_sent_since_heartbeat = 0;

    bool can_decode() const { return info.role() == rpc::pb::ROLE_DECODE || info.role() == rpc::pb::ROLE_BOTH; }
    bool is_prefill() const { return info.role() == rpc::pb::ROLE_PREFILL; }
  };

  // Hooks for the etcd directory.
  // Whether the registry still lists the worker (embedded: always).
  virtual bool listed(const WorkerRecord&) const { return true; }
  // The load the router weighs: here, what this frontend routed to the worker.
  virtual void fill_load(const WorkerRecord& w, Candidate* c) const;
  // The prefill queue's depth when it is counted rather than read from NATS: the remote prefills held.
  virtual int counted_prefill_queue(const RoutingPool&) const { return prefills_held_; }
  // A connection ended; runs before its requests are reported lost.
  virtual void on_connection_lost(const WorkerRecord&) {}

  bool routable(const WorkerRecord& w) const { return w.registered && !w.draining && listed(w); }
  // Adds a record for a new connection and starts reading from it. Returns its key.
  WorkerKey adopt(std::shared_ptr<rpc::Connection> conn, const std::string& member_id);

  DirectoryOptions options_;
  std::shared_ptr<PostGate> gate_;
  std::map<WorkerKey, WorkerRecord> workers_;
  DirectoryEvents events_;
  bool closed_ = false;  // close() ran: the frontend is stopping

 private:
  void add_record(WorkerKey key, std::shared_ptr<rpc::Connection> conn);
  void start_reading(WorkerKey key, const std::shared_ptr<rpc::Connection>& conn);
  void on_message(WorkerKey key, rpc::pb::Envelope& message);
  void on_closed(WorkerKey key, const Status& reason);

  std::unique_ptr<net::Listener> registry_;
  std::unique_ptr<PrefillQueueDepth> queue_;
  // The prompt's block hashes under each (salt, block size) of the pool's workers (one pool() call).
  const std::vector<uint64_t>& prompt_hashes(const rpc::pb::Register& info, std::span<const int32_t> prompt) const;

  std::atomic<WorkerKey> next_key_{1};
  KvIndex kv_index_;  // the caches of the workers that publish KV events
  mutable std::map<std::pair<uint64_t, int>, std::vector<uint64_t>> hash_scratch_;
  int prefills_held_ = 0;  // remote prefills routed directly and not yet started
};

}  // namespace tandem::frontend
