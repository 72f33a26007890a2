// The embedded worker directory (see embedded_directory.h): registrations, heartbeats and the
// connections they arrive on, and the load counted from this frontend's own routing.
#include "frontend/embedded_directory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "common/block_hash.h"

namespace tandem::frontend {

EmbeddedDirectory::EmbeddedDirectory(DirectoryOptions options, std::shared_ptr<PostGate> gate,
                                     std::unique_ptr<net::Listener> registry, std::unique_ptr<PrefillQueueDepth> queue)
    : options_(std::move(options)), gate_(std::move(gate)), registry_(std::move(registry)), queue_(std::move(queue)) {}

EmbeddedDirectory::~EmbeddedDirectory() = default;

void EmbeddedDirectory::start() {
  registry_->start([this](int fd, std::string peer) {
    const WorkerKey key = next_key_.fetch_add(1);
    auto conn = rpc::Connection::adopt(fd, peer, "registry");
    gate_->post([this, key, conn] { add_record(key, conn); });
    start_reading(key, conn);
  });
  if (queue_) queue_->start();
}

void EmbeddedDirectory::tick(Clock::time_point now) {
  for (auto& [key, w] : workers_) {
    if (now - w.last_seen > std::chrono::milliseconds(options_.heartbeat_timeout_ms)) {
      spdlog::warn("event=worker_heartbeat_timeout worker_id={} silent_ms={}", w.info.worker_id(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - w.last_seen).count());
      w.conn->close();  // its close handler reports the requests lost
    }
  }
}

void EmbeddedDirectory::close() {
  closed_ = true;
  registry_->close();
  for (auto& [key, w] : workers_) w.conn->close();
}

void EmbeddedDirectory::stop_threads() {
  if (queue_) queue_->stop();
  registry_->close();
}

void EmbeddedDirectory::shutdown() {
  for (auto& [key, w] : workers_) w.conn->close();
  // Their reader threads are detached: wait for them to finish (the close handlers find the gate
  // closed), so none is still running when main returns and the logger is torn down.
  for (auto& [key, w] : workers_) w.conn->wait_closed(std::chrono::seconds(2));
}

WorkerKey EmbeddedDirectory::adopt(std::shared_ptr<rpc::Connection> conn, const std::string& member_id) {
  const WorkerKey key = next_key_.fetch_add(1);
  add_record(key, conn);
  workers_[key].member_id = member_id;
  start_reading(key, conn);
  return key;
}

void EmbeddedDirectory::add_record(WorkerKey key, std::shared_ptr<rpc::Connection> conn) {
  WorkerRecord& w = workers_[key];
  w.key = key;
  w.conn = std::move(conn);
  w.last_seen = Clock::now();
}

// The connection's messages and its end go to the I/O thread, in order. Messages read in one burst
// (an engine step's tokens) travel in one post: the reader appends to the connection's inbox, and only
// a message that finds it empty posts the drain that hands the whole inbox to on_message.
void EmbeddedDirectory::start_reading(WorkerKey key, const std::shared_ptr<rpc::Connection>& conn) {
  struct Inbox {
    std::mutex mu;
    std::vector<rpc::pb::Envelope> messages;  // GUARDED_BY(mu): non-empty only while a drain is posted
  };
  auto g = gate_;
  auto inbox = std::make_shared<Inbox>();
  conn->start(
      [this, g, key, inbox](rpc::pb::Envelope& env) {
        bool post = false;
        {
          std::lock_guard<std::mutex> lock(inbox->mu);
          post = inbox->messages.empty();
          inbox->messages.emplace_back().Swap(&env);
        }
        if (!post) return;
        g->post([this, key, inbox] {
          std::vector<rpc::pb::Envelope> messages;
          {
            std::lock_guard<std::mutex> lock(inbox->mu);
            messages.swap(inbox->messages);
          }
          for (rpc::pb::Envelope& message : messages) on_message(key, message);
        });
      },
      [this, g, key](const Status& reason) { g->post([this, key, reason] { on_closed(key, reason); }); });
}

void EmbeddedDirectory::on_message(WorkerKey key, rpc::pb::Envelope& env) {
  auto it = workers_.find(key);
  if (it == workers_.end()) return;
  WorkerRecord& w = it->second;
  w.last_seen = Clock::now();
  switch (env.msg_case()) {
    case rpc::pb::Envelope::kRegister: {
      w.info = env.register_();
      w.registered = true;
      w.prefix = std::make_unique<PrefixIndex>(std::max(1, w.info.block_size()));
      rpc::pb::Envelope ack;
      ack.mutable_register_ack()->set_ok(true);
      w.conn->send(ack);
      if (w.info.kv_events()) {
        // Its cache arrives as a snapshot; the events before it are not applied.
        kv_index_.add_worker(key);
        rpc::pb::Envelope request;
        request.mutable_kv_snapshot_request();
        w.conn->send(request);
      }
      spdlog::info("event=worker_registered worker_id={} role={} model={} rpc={} kv_blocks={} peer={}",
                   w.info.worker_id(), role_label(w.info.role()), w.info.model(), w.info.rpc_address(),
                   w.info.num_kv_blocks(), w.conn->peer());
      break;
    }
    case rpc::pb::Envelope::kHeartbeat: {
      rpc::pb::Heartbeat& h = *env.mutable_heartbeat();
      if (w.prefix) {
        if (h.prefix_reset()) w.prefix->clear();
        w.prefix->insert_hashes({h.prefix_blocks_added().data(), static_cast<size_t>(h.prefix_blocks_added_size())});
      }
      h.clear_prefix_blocks_added();
      w.heartbeat.Swap(&h);
      w.sent_since_heartbeat = 0;
      w.blocks_sent_since_heartbeat = 0;
      w.prefills_sent_since_heartbeat = 0;
      break;
    }
    case rpc::pb::Envelope::kKvEvents:
      if (kv_index_.apply(key, env.kv_events()) == KvIndex::Applied::kNeedSnapshot) {
        spdlog::warn("event=kv_events_gap worker_id={} seq={}", w.info.worker_id(), env.kv_events().seq());
        rpc::pb::Envelope request;
        request.mutable_kv_snapshot_request();
        w.conn->send(request);
      }
      break;
    case rpc::pb::Envelope::kKvSnapshot:
      kv_index_.apply_snapshot(key, env.kv_snapshot());
      spdlog::debug("event=kv_snapshot worker_id={} seq={} blocks={}", w.info.worker_id(), env.kv_snapshot().seq(),
                    env.kv_snapshot().hashes_size());
      break;
    case rpc::pb::Envelope::kDrain:
      w.draining = true;
      spdlog::info("event=worker_draining worker_id={} requests={}", w.info.worker_id(), w.requests.size());
      break;
    case rpc::pb::Envelope::kOutput:
      if (events_.output) events_.output(key, env.output());
      break;
    default: break;
  }
}

void EmbeddedDirectory::on_closed(WorkerKey key, const Status& reason) {
  auto it = workers_.find(key);
  if (it == workers_.end()) return;
  WorkerRecord& w = it->second;
  if (w.registered) {
    spdlog::warn("event=worker_lost worker_id={} role={} reason=\"{}\" requests={}", w.info.worker_id(),
                 role_label(w.info.role()), reason.message(), w.requests.size());
  }
  on_connection_lost(w);
  kv_index_.remove_worker(key);
  const std::vector<std::string> requests(w.requests.begin(), w.requests.end());
  const std::string name = w.registered ? w.info.worker_id() : w.conn->peer();
  if (events_.worker_lost) events_.worker_lost(key, name, reason, requests);
  workers_.erase(key);  // the handler may have changed the map's other entries, never erased this one
}

void EmbeddedDirectory::fill_load(const WorkerRecord& w, Candidate* c) const {
  c->outstanding = w.outstanding;
  c->prefills_outstanding = w.prefills_outstanding;
}

RoutingPool EmbeddedDirectory::pool(const std::string& model, std::span<const int32_t> prompt,
                                     WorkerKey excluded) const {
  RoutingPool pool;
  for (const auto& [key, w] : workers_) {
    if (key == excluded || !routable(w) || (!serves_model(w.info, model) && options_.served_model_name.empty())) continue;
    Candidate c;
    c.can_decode = w.can_decode();
    c.is_prefill = w.is_prefill();
    c.block_size = std::max(1, w.info.block_size());
    c.load_blocks = w.load_blocks;
    fill_load(w, &c);
    if (kv_index_.has_worker(key)) {
      c.overlap_tokens = kv_index_.overlap_blocks(key, prompt_hashes(w.info, prompt)) * c.block_size;
    } else {
      c.overlap_tokens = w.prefix && c.can_decode && !w.info.no_prefix_caching() ? w.prefix->overlap(prompt) : 0;
    }
    pool.candidates.push_back(c);
    pool.keys.push_back(key);
  }
  hash_scratch_.clear();
  if (queue_) {
    pool.prefill_queue = queue_->depth_for_routing();
    pool.remote_prefill_up = queue_->up();
  } else {
    pool.prefill_queue = counted_prefill_queue(pool);
  }
  return pool;
}

const rpc::pb::Register* EmbeddedDirectory::info(WorkerKey worker) const {
  auto it = workers_.find(worker);
  return it == workers_.end() ? nullptr : &it->second.info;
}

bool EmbeddedDirectory::send(WorkerKey worker, const rpc::pb::Envelope& message) {
  auto it = workers_.find(worker);
  return it != workers_.end() && it->second.conn->send(message);
}

void EmbeddedDirectory::address_remote_prefill(WorkerKey prefill_worker, rpc::pb::Generate* generate) const {
  // Through the queue any prefill worker may take it; directly, the one chosen.
  if (queue_) {
    generate->set_remote_prefill_queue(true);
    return;
  }
  auto it = workers_.find(prefill_worker);
  if (it != workers_.end()) generate->set_remote_prefill_address(it->second.info.rpc_address());
}

void EmbeddedDirectory::note_prompt(WorkerKey worker, std::span<const int32_t> prompt) {
  auto it = workers_.find(worker);
  if (it == workers_.end() || it->second.info.no_prefix_caching() || !it->second.prefix) return;
  it->second.prefix->insert(prompt);
}

const std::vector<uint64_t>& EmbeddedDirectory::prompt_hashes(const rpc::pb::Register& info,
                                                              std::span<const int32_t> prompt) const {
  const auto key = std::make_pair(info.kv_hash_salt(), std::max(1, info.block_size()));
  auto it = hash_scratch_.find(key);
  if (it == hash_scratch_.end()) it = hash_scratch_.emplace(key, chain_block_hashes(key.first, key.second, prompt)).first;
  return it->second;
}

void EmbeddedDirectory::note_routed(WorkerKey worker, const std::string& request_id, std::span<const int32_t> prompt) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  WorkerRecord& w = it->second;
  const int block_size = std::max(1, w.info.block_size());
  const int blocks = (static_cast<int>(prompt.size()) + block_size - 1) / block_size;
  w.load_blocks += blocks - w.request_blocks[request_id];
  w.blocks_sent_since_heartbeat += blocks;
  w.request_blocks[request_id] = blocks;
  if (kv_index_.has_worker(worker)) kv_index_.add_pending(worker, request_id, chain_block_hashes(w.info.kv_hash_salt(), block_size, prompt));
}

void EmbeddedDirectory::assign(WorkerKey worker, const std::string& request_id) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  it->second.outstanding++;
  it->second.sent_since_heartbeat++;
  it->second.requests.insert(request_id);
}

void EmbeddedDirectory::unassign(WorkerKey worker, const std::string& request_id) {
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  it->second.outstanding--;
  it->second.requests.erase(request_id);
  auto blocks = it->second.request_blocks.find(request_id);
  if (blocks != it->second.request_blocks.end()) {
    it->second.load_blocks -= blocks->second;
    it->second.request_blocks.erase(blocks);
  }
  kv_index_.remove_pending(worker, request_id);
}

WorkerKey EmbeddedDirectory::hold_prefill(WorkerKey prefill_worker) {
  if (queue_) {
    queue_->routed();
    return 0;
  }
  auto it = workers_.find(prefill_worker);
  if (it == workers_.end()) return 0;
  it->second.prefills_outstanding++;
  it->second.prefills_sent_since_heartbeat++;
  ++prefills_held_;
  return prefill_worker;
}

void EmbeddedDirectory::release_prefill(WorkerKey slot) {
  if (slot == 0) return;
  auto it = workers_.find(slot);
  if (it != workers_.end()) it->second.prefills_outstanding--;
  --prefills_held_;
}

void EmbeddedDirectory::for_each_worker(const std::function<void(const WorkerView&)>& visit) const {
  for (const auto& [key, w] : workers_) {
    WorkerView v;
    v.key = key;
    v.info = &w.info;
    v.heartbeat = &w.heartbeat;
    v.registered = w.registered;
    v.routable = routable(w);
    v.draining = w.draining;
    v.outstanding = w.outstanding;
    visit(v);
  }
}

double EmbeddedDirectory::prefill_queue_gauge() const {
  return queue_ ? static_cast<double>(queue_->depth()) : prefills_held_;
}

void EmbeddedDirectory::store_thresholds(ThresholdChanges, std::function<void(Status)> done) { done(Status()); }

}  // namespace tandem::frontend
