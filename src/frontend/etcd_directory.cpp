// The etcd worker directory (see etcd_directory.h): membership from the watch, dialing, and the load
// as the workers report it.
#include "frontend/etcd_directory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "cluster/keys.h"

namespace tandem::frontend {

using nlohmann::json;

EtcdDirectory::EtcdDirectory(DirectoryOptions options, std::shared_ptr<PostGate> gate,
                             std::unique_ptr<net::Listener> registry, std::unique_ptr<PrefillQueueDepth> queue)
    : EmbeddedDirectory(std::move(options), std::move(gate), std::move(registry), std::move(queue)),
      prefix_(cluster::key_prefix(options_.cluster_namespace)) {}

EtcdDirectory::~EtcdDirectory() {
  if (watcher_) watcher_->stop();
}

void EtcdDirectory::start() {
  EmbeddedDirectory::start();
  auto g = gate_;
  watcher_ = std::make_unique<cluster::EtcdWatcher>(
      cluster::EtcdClient(options_.etcd, options_.etcd_credentials), prefix_,
      [this, g](const std::vector<cluster::KeyValue>& kvs) { g->post([this, kvs] { on_snapshot(kvs); }); },
      [this, g](const std::vector<cluster::WatchEvent>& events) { g->post([this, events] { on_events(events); }); });
}

void EtcdDirectory::stop_threads() {
  if (watcher_) watcher_->stop();
  EmbeddedDirectory::stop_threads();
}

void EtcdDirectory::tick(Clock::time_point now) {
  for (auto& [id, m] : members_) {
    if (m.key == 0 && !m.dialing && now >= m.next_dial) dial(m);
  }
  EmbeddedDirectory::tick(now);
}

bool EtcdDirectory::listed(const WorkerRecord& w) const {
  if (w.member_id.empty()) return true;  // registered on the registry port
  auto m = members_.find(w.member_id);
  return m != members_.end() && m->second.key == w.key;
}

// Several frontends share the workers: load as the worker reports it to all of them, plus what this
// frontend sent since (so that a burst between two heartbeats still spreads).
void EtcdDirectory::fill_load(const WorkerRecord& w, Candidate* c) const {
  const auto& h = w.heartbeat;
  c->outstanding = h.num_running() + h.num_waiting() + h.num_reservations() + w.sent_since_heartbeat;
  c->prefills_outstanding = h.num_prefills_in_flight() + w.prefills_sent_since_heartbeat;
  // Blocks its running requests hold, by its heartbeat, plus what was routed here since.
  c->load_blocks = h.num_kv_blocks_used() + w.blocks_sent_since_heartbeat;
}

int EtcdDirectory::counted_prefill_queue(const RoutingPool& pool) const {
  int queue = 0;
  for (const auto& c : pool.candidates) {
    if (c.is_prefill) queue += c.prefills_outstanding;
  }
  return queue;
}

void EtcdDirectory::on_connection_lost(const WorkerRecord& w) {
  if (w.member_id.empty()) return;
  auto m = members_.find(w.member_id);
  if (m != members_.end() && m->second.key == w.key) {
    m->second.key = 0;  // still listed: dial again (a restarted worker, or a passing network fault)
    m->second.next_dial = Clock::now() + std::chrono::milliseconds(200);
  }
}

std::optional<std::map<std::string, int>> EtcdDirectory::listed_members() const {
  std::map<std::string, int> by_role;
  for (const auto& [id, m] : members_) by_role[m.role]++;
  return by_role;
}

// etcd answers off the I/O thread; the outcome comes back through the gate.
void EtcdDirectory::store_thresholds(ThresholdChanges changes, std::function<void(Status)> done) {
  auto g = gate_;
  std::thread([g, changes = std::move(changes), done = std::move(done), endpoints = options_.etcd,
               credentials = options_.etcd_credentials, prefix = prefix_] {
    cluster::EtcdClient client(endpoints, credentials);
    Status s;
    for (const auto& [name, value] : changes) {
      s = client.put(prefix + "disagg/" + name, value);
      if (!s.ok()) break;
    }
    g->post([done, s] {
      done(s.ok() ? s : Status::Unavailable("etcd did not take the change: " + s.message()));
    });
  }).detach();
}

// A fresh read of the namespace (at start, and after each reconnect): what is not there is gone.
void EtcdDirectory::on_snapshot(const std::vector<cluster::KeyValue>& kvs) {
  std::set<std::string> listed;
  for (const auto& kv : kvs) apply_key(kv.key, kv.value, &listed);
  std::vector<std::string> gone;
  for (const auto& [id, m] : members_) {
    if (!listed.count(id)) gone.push_back(id);
  }
  for (const auto& id : gone) remove_member(id, "not in etcd");
}

void EtcdDirectory::on_events(const std::vector<cluster::WatchEvent>& events) {
  for (const auto& e : events) {
    if (!e.deleted) {
      apply_key(e.kv.key, e.kv.value, nullptr);
      continue;
    }
    const std::string rest = e.kv.key.substr(std::min(e.kv.key.size(), prefix_.size()));
    if (rest.rfind("workers/", 0) == 0) remove_member(rest.substr(rest.rfind('/') + 1), "lease expired or revoked");
  }
}

void EtcdDirectory::apply_key(const std::string& key, const std::string& value, std::set<std::string>* listed) {
  if (key.rfind(prefix_, 0) != 0) return;
  const std::string rest = key.substr(prefix_.size());
  if (rest.rfind("workers/", 0) == 0) {
    const std::string id = rest.substr(rest.rfind('/') + 1);
    json record = json::parse(value, nullptr, false);
    if (id.empty() || !record.is_object() || !record.contains("rpc_address")) {
      spdlog::warn("event=etcd_bad_worker_record key={}", key);
      return;
    }
    upsert_member(id, record);
    if (listed) listed->insert(id);
  } else if (rest.rfind("disagg/", 0) == 0) {
    if (events_.threshold) events_.threshold(rest.substr(7), value, "etcd");
  }
}

void EtcdDirectory::upsert_member(const std::string& id, const json& record) {
  const std::string address = record.value("rpc_address", "");
  auto it = members_.find(id);
  if (it != members_.end()) {
    if (it->second.rpc_address == address) return;
    // Same id, new address: a restarted worker. Its old connection is unlisted from here.
    spdlog::info("event=worker_moved worker_id={} rpc={} was={}", id, address, it->second.rpc_address);
    members_.erase(it);
  }
  Member& m = members_[id];
  m.id = id;
  m.role = record.value("role", "");
  m.rpc_address = address;
  m.next_dial = Clock::now();
  spdlog::info("event=worker_listed worker_id={} role={} rpc={}", id, m.role, address);
  // A connection that is still open (the worker re-registered after an etcd outage) is reused.
  for (auto& [key, w] : workers_) {
    if (w.member_id == id && w.conn->is_open() && !w.draining && w.info.rpc_address() == address) {
      m.key = key;
      return;
    }
  }
  dial(m);
}

void EtcdDirectory::remove_member(const std::string& id, const char* reason) {
  auto it = members_.find(id);
  if (it == members_.end()) return;
  size_t held = 0;
  auto w = workers_.find(it->second.key);
  if (it->second.key != 0 && w != workers_.end()) held = w->second.requests.size();
  // A connected worker keeps its connection and finishes what it holds (a revoked lease is a drain);
  // it only gets nothing new. A dead one's connection has already failed its requests.
  spdlog::warn("event=worker_unlisted worker_id={} reason=\"{}\" connected={} requests={}", id, reason,
               it->second.key != 0, held);
  members_.erase(it);
}

void EtcdDirectory::dial(Member& m) {
  m.dialing = true;
  auto g = gate_;
  std::string id = m.id, address = m.rpc_address;
  std::thread([this, g, id, address] {
    auto dialed = rpc::Connection::dial(address, 1000);
    g->post([this, id, address, dialed]() mutable { on_dialed(id, address, std::move(dialed)); });
  }).detach();
}

void EtcdDirectory::on_dialed(const std::string& id, const std::string& address,
                              StatusOr<std::shared_ptr<rpc::Connection>> dialed) {
  auto it = members_.find(id);
  const bool same = it != members_.end() && it->second.rpc_address == address;
  if (same) it->second.dialing = false;
  const bool wanted = same && it->second.key == 0 && !closed_;
  if (!dialed.ok()) {
    if (!wanted) return;
    Member& m = it->second;
    m.next_dial = Clock::now() + std::chrono::milliseconds(500);
    if (!m.warned) {
      spdlog::warn("event=worker_unreachable worker_id={} rpc={} reason=\"{}\"; retrying while it is listed", id,
                   address, dialed.status().message());
      m.warned = true;
    }
    return;
  }
  auto conn = *dialed;
  if (!wanted) {
    conn->close();
    return;
  }
  const WorkerKey key = adopt(conn, id);
  it->second.key = key;
  it->second.warned = false;
  rpc::pb::Envelope hello;
  hello.mutable_frontend_hello()->set_frontend_id(options_.frontend_id);
  conn->send(hello);
}

}  // namespace tandem::frontend
