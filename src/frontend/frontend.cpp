// Frontend (see frontend.h): HTTP routes, the registry of workers, and the life of one request from
// parsing to its last SSE event. Everything here runs on the HTTP server's I/O thread.
#include "frontend/frontend.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/keys.h"
#include "cluster/prefill_queue.h"
#include "common/error.h"
#include "common/socket.h"
#include "frontend/metrics.h"
#include "frontend/openai.h"
#include "rpc/connection.h"

namespace tandem::frontend {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

const char* role_label(rpc::pb::Role role) {
  switch (role) {
    case rpc::pb::ROLE_PREFILL: return "prefill";
    case rpc::pb::ROLE_DECODE: return "decode";
    case rpc::pb::ROLE_BOTH: return "both";
    default: return "unknown";
  }
}

const char* finish_reason_text(rpc::pb::FinishReason r) {
  switch (r) {
    case rpc::pb::FINISH_STOP: return "stop";
    case rpc::pb::FINISH_LENGTH: return "length";
    case rpc::pb::FINISH_ABORT: return "abort";
    case rpc::pb::FINISH_ERROR: return "error";
    default: return "";
  }
}

struct WorkerRecord {
  uint64_t key = 0;
  std::shared_ptr<rpc::Connection> conn;
  bool registered = false;
  rpc::pb::Register info;
  rpc::pb::Heartbeat heartbeat;
  Clock::time_point last_seen = Clock::now();
  int outstanding = 0;
  int prefills_outstanding = 0;
  bool draining = false;  // routes nothing new; finishes what it holds
  std::string member_id;  // cluster mode: the etcd member this connection was dialed for
  // Routed here since its last heartbeat (not yet in the load it reports): decodes, remote prefills.
  int sent_since_heartbeat = 0;
  int prefills_sent_since_heartbeat = 0;
  std::unique_ptr<PrefixIndex> prefix;
  std::set<std::string> requests;  // decode requests riding on this worker

  bool can_decode() const { return info.role() == rpc::pb::ROLE_DECODE || info.role() == rpc::pb::ROLE_BOTH; }
  bool is_prefill() const { return info.role() == rpc::pb::ROLE_PREFILL; }
};

// Cluster mode: a worker listed in etcd (/tandem/<ns>/workers/<role>/<id>) and its connection.
struct Member {
  std::string id;
  std::string role;
  std::string rpc_address;
  uint64_t key = 0;       // its WorkerRecord while connected; 0 = not connected
  bool dialing = false;
  bool warned = false;    // unreachable already logged
  Clock::time_point next_dial;
};

// Lets threads that may outlive the frontend (dialers, the etcd watcher, connection readers) post
// to the I/O thread only while it exists.
struct PostGate {
  std::mutex mu;
  bool open = true;        // GUARDED_BY(mu)
  Executor* io = nullptr;  // GUARDED_BY(mu)
  void post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu);
    if (open && io) io->post(std::move(fn));
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu);
    open = false;
  }
};

struct ChoiceState {
  std::string text;
  std::vector<int32_t> tokens;
  json logprobs_content = json::array();  // chat: one entry per token
  json completion_logprobs = {{"tokens", json::array()}, {"token_logprobs", json::array()},
                              {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  int text_offset = 0;
  bool finished = false;
  std::string finish_reason;
  std::string stop_reason;
};

struct Active {
  std::string id;           // the internal request id (unique among live requests)
  std::string response_id;  // "cmpl-..." / "chatcmpl-..."
  std::string x_request_id;
  GenerationRequest req;
  std::string model;
  int64_t created = 0;
  std::shared_ptr<HttpExchange> exchange;
  uint64_t worker_key = 0;
  uint64_t prefill_key = 0;  // remote prefill target until the first token
  bool remote = false;
  bool seen_first = false;
  int num_prompt_tokens = 0;
  int num_cached_tokens = 0;
  std::vector<ChoiceState> choices;
  int num_finished = 0;
  int num_output_tokens = 0;
  Clock::time_point arrival, first_token, last_token, last_activity;
  // What was sent to the decode worker, kept until its first token: a request that worker refuses or
  // loses before producing anything is sent once to another worker (Frontend::Impl::reroute).
  std::shared_ptr<rpc::pb::Envelope> generate;
  bool rerouted = false;
};

}  // namespace

struct Frontend::Impl {
  FrontendOptions options;
  std::unique_ptr<PromptCodec> codec;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<net::Listener> registry;
  std::atomic<uint64_t> next_key{1};
  uint64_t next_request = 1;
  std::mt19937_64 rng{std::random_device{}()};
  bool draining = false;
  Clock::time_point drain_deadline;
  bool stopped = false;

  std::map<uint64_t, WorkerRecord> workers;
  std::map<std::string, Active> active;
  int prefill_queue = 0;
  Metrics metrics;

  Executor& io() { return http->executor(); }

  // Connection threads may outlive run(): they post only while the I/O context exists.
  std::shared_ptr<PostGate> gate = std::make_shared<PostGate>();
  void post_from_connection(std::function<void()> fn) { gate->post(std::move(fn)); }

  // Cluster mode.
  std::map<std::string, Member> members;  // by worker id
  std::unique_ptr<cluster::EtcdWatcher> watcher;

  // Prefill queue (--prefill-queue): its depth as last read, and whether NATS answered.
  std::unique_ptr<cluster::PrefillQueue> queue;
  std::thread queue_poller;
  std::atomic<bool> queue_poller_stop{false};
  int64_t queue_depth = 0;
  int queue_sent_since_poll = 0;  // remote prefills routed since that read
  bool queue_up = false;
  bool queue_mode() const { return queue != nullptr; }

  void start_queue_poller() {
    auto g = gate;
    queue_poller = std::thread([this, g] {
      while (!queue_poller_stop.load()) {
        auto depth = queue->depth();
        const bool up = depth.ok();
        const int64_t n = up ? *depth : 0;
        const std::string reason = up ? "" : depth.status().message();
        g->post([this, up, n, reason] {
          if (up != queue_up) {
            if (up) {
              spdlog::info("event=prefill_queue_reachable stream={} depth={}", queue->stream_name(), n);
            } else {
              spdlog::warn("event=prefill_queue_unavailable reason=\"{}\"; remote prefills fall back to local prefill "
                           "until it returns", reason);
            }
          }
          queue_up = up;
          queue_depth = n;
          queue_sent_since_poll = 0;
        });
        for (int i = 0; i < 10 && !queue_poller_stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
  }
  void stop_queue_poller() {
    queue_poller_stop.store(true);
    if (queue_poller.joinable()) queue_poller.join();
  }
  bool cluster_mode() const { return !options.etcd.empty(); }
  std::string key_prefix() const { return cluster::key_prefix(options.cluster_namespace); }

  // Routes new requests to it: registered, not draining, and (cluster mode) still listed in etcd.
  bool routable(const WorkerRecord& w) const {
    if (!w.registered || w.draining) return false;
    if (w.member_id.empty()) return true;
    auto m = members.find(w.member_id);
    return m != members.end() && m->second.key == w.key;
  }

  // ---- registry -------------------------------------------------------------------------------

  void on_worker_connected(uint64_t key, std::shared_ptr<rpc::Connection> conn) {
    WorkerRecord& w = workers[key];
    w.key = key;
    w.conn = std::move(conn);
    w.last_seen = Clock::now();
  }

  void on_worker_message(uint64_t key, rpc::pb::Envelope& env) {
    auto it = workers.find(key);
    if (it == workers.end()) return;
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
        w.prefills_sent_since_heartbeat = 0;
        break;
      }
      case rpc::pb::Envelope::kDrain:
        w.draining = true;
        spdlog::info("event=worker_draining worker_id={} requests={}", w.info.worker_id(), w.requests.size());
        break;
      case rpc::pb::Envelope::kOutput: on_output(w, env.output()); break;
      default: break;
    }
  }

  void on_worker_closed(uint64_t key, const Status& reason) {
    auto it = workers.find(key);
    if (it == workers.end()) return;
    WorkerRecord& w = it->second;
    if (w.registered) {
      spdlog::warn("event=worker_lost worker_id={} role={} reason=\"{}\" requests={}", w.info.worker_id(),
                   role_label(w.info.role()), reason.message(), w.requests.size());
    }
    if (!w.member_id.empty()) {
      auto m = members.find(w.member_id);
      if (m != members.end() && m->second.key == key) {
        m->second.key = 0;  // still listed: dial again (a restarted worker, or a passing network fault)
        m->second.next_dial = Clock::now() + std::chrono::milliseconds(200);
      }
    }
    std::vector<std::string> ids(w.requests.begin(), w.requests.end());
    const std::string name = w.registered ? w.info.worker_id() : w.conn->peer();
    for (const auto& id : ids) {
      auto a = active.find(id);
      if (a != active.end() && reroute(a->second, w, "worker_lost")) continue;
      fail(id, ApiError{503, "decode worker " + name + " lost: " + reason.message(), "", ""}, /*abort_worker=*/false);
    }
    // Remote prefills routed to it no longer count toward the queue; their decode workers fall back.
    for (auto& [id, a] : active) {
      if (a.prefill_key == key) {
        a.prefill_key = 0;
        --prefill_queue;
      }
    }
    workers.erase(it);
  }

  // The connection's messages and its end go to the I/O thread, in order.
  void start_connection(uint64_t key, const std::shared_ptr<rpc::Connection>& conn) {
    auto g = gate;
    conn->start(
        [this, g, key](rpc::pb::Envelope& env) {
          auto message = std::make_shared<rpc::pb::Envelope>();
          message->Swap(&env);
          g->post([this, key, message] { on_worker_message(key, *message); });
        },
        [this, g, key](const Status& reason) { g->post([this, key, reason] { on_worker_closed(key, reason); }); });
  }

  void start_registry() {
    registry->start([this](int fd, std::string peer) {
      uint64_t key = next_key.fetch_add(1);
      auto conn = rpc::Connection::adopt(fd, peer);
      post_from_connection([this, key, conn] { on_worker_connected(key, conn); });
      start_connection(key, conn);
    });
  }

  // ---- cluster mode: membership from etcd -------------------------------------------------------

  void start_watcher() {
    auto g = gate;
    watcher = std::make_unique<cluster::EtcdWatcher>(
        cluster::EtcdClient(options.etcd), key_prefix(),
        [this, g](const std::vector<cluster::KeyValue>& kvs) { g->post([this, kvs] { on_etcd_snapshot(kvs); }); },
        [this, g](const std::vector<cluster::WatchEvent>& events) { g->post([this, events] { on_etcd_events(events); }); });
  }

  // A fresh read of the namespace (at start, and after each reconnect): what is not there is gone.
  void on_etcd_snapshot(const std::vector<cluster::KeyValue>& kvs) {
    std::set<std::string> listed;
    for (const auto& kv : kvs) apply_key(kv.key, kv.value, &listed);
    std::vector<std::string> gone;
    for (const auto& [id, m] : members) {
      if (!listed.count(id)) gone.push_back(id);
    }
    for (const auto& id : gone) remove_member(id, "not in etcd");
  }

  void on_etcd_events(const std::vector<cluster::WatchEvent>& events) {
    for (const auto& e : events) {
      if (!e.deleted) {
        apply_key(e.kv.key, e.kv.value, nullptr);
        continue;
      }
      const std::string rest = e.kv.key.substr(std::min(e.kv.key.size(), key_prefix().size()));
      if (rest.rfind("workers/", 0) == 0) remove_member(rest.substr(rest.rfind('/') + 1), "lease expired or revoked");
    }
  }

  void apply_key(const std::string& key, const std::string& value, std::set<std::string>* listed) {
    const std::string prefix = key_prefix();
    if (key.rfind(prefix, 0) != 0) return;
    const std::string rest = key.substr(prefix.size());
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
      apply_threshold(rest.substr(7), value, "etcd");
    }
  }

  void upsert_member(const std::string& id, const json& record) {
    const std::string address = record.value("rpc_address", "");
    auto it = members.find(id);
    if (it != members.end()) {
      if (it->second.rpc_address == address) return;
      // Same id, new address: a restarted worker. Its old connection is unlisted from here.
      spdlog::info("event=worker_moved worker_id={} rpc={} was={}", id, address, it->second.rpc_address);
      members.erase(it);
    }
    Member& m = members[id];
    m.id = id;
    m.role = record.value("role", "");
    m.rpc_address = address;
    m.next_dial = Clock::now();
    spdlog::info("event=worker_listed worker_id={} role={} rpc={}", id, m.role, address);
    // A connection that is still open (the worker re-registered after an etcd outage) is reused.
    for (auto& [key, w] : workers) {
      if (w.member_id == id && w.conn->is_open() && !w.draining && w.info.rpc_address() == address) {
        m.key = key;
        return;
      }
    }
    dial_member(m);
  }

  void remove_member(const std::string& id, const char* reason) {
    auto it = members.find(id);
    if (it == members.end()) return;
    size_t held = 0;
    auto w = workers.find(it->second.key);
    if (it->second.key != 0 && w != workers.end()) held = w->second.requests.size();
    // A connected worker keeps its connection and finishes what it holds (a revoked lease is a drain);
    // it only gets nothing new. A dead one's connection has already failed its requests.
    spdlog::warn("event=worker_unlisted worker_id={} reason=\"{}\" connected={} requests={}", id, reason,
                 it->second.key != 0, held);
    members.erase(it);
  }

  void dial_member(Member& m) {
    m.dialing = true;
    auto g = gate;
    std::string id = m.id, address = m.rpc_address;
    std::thread([this, g, id, address] {
      auto dialed = rpc::Connection::dial(address, 1000);
      g->post([this, id, address, dialed]() mutable { on_member_dialed(id, address, std::move(dialed)); });
    }).detach();
  }

  void on_member_dialed(const std::string& id, const std::string& address,
                        StatusOr<std::shared_ptr<rpc::Connection>> dialed) {
    auto it = members.find(id);
    const bool same = it != members.end() && it->second.rpc_address == address;
    if (same) it->second.dialing = false;
    const bool wanted = same && it->second.key == 0 && !stopped;
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
    const uint64_t key = next_key.fetch_add(1);
    on_worker_connected(key, conn);
    workers[key].member_id = id;
    it->second.key = key;
    it->second.warned = false;
    start_connection(key, conn);
    rpc::pb::Envelope hello;
    hello.mutable_frontend_hello()->set_frontend_id(options.frontend_id);
    conn->send(hello);
  }

  // ---- thresholds while serving -------------------------------------------------------------------

  // One threshold by name ("max_local_prefill", "max_prefill_queue") from text; logged when it changes.
  bool apply_threshold(const std::string& name, const std::string& text, const char* source) {
    int* target = name == "max_local_prefill" ? &options.router.max_local_prefill
                  : name == "max_prefill_queue" ? &options.router.max_prefill_queue
                                                : nullptr;
    int value = -1;
    try {
      size_t used = 0;
      value = std::stoi(text, &used);
      if (used != text.size()) value = -1;
    } catch (const std::exception&) {
      value = -1;
    }
    if (!target || value < 0) {
      spdlog::warn("event=router_config_ignored source={} name={} value=\"{}\" (a non-negative integer for "
                   "max_local_prefill or max_prefill_queue)", source, name, text);
      return false;
    }
    if (*target != value) {
      spdlog::info("event=router_config source={} name={} old={} new={} max_local_prefill={} max_prefill_queue={}", source,
                   name, *target, value, name == "max_local_prefill" ? value : options.router.max_local_prefill,
                   name == "max_prefill_queue" ? value : options.router.max_prefill_queue);
      *target = value;
    }
    return true;
  }

  // Periodic: drop silent workers, fail requests that stalled, end a drain.
  void tick() {
    if (stopped) return;
    const auto now = Clock::now();
    for (auto& [id, m] : members) {
      if (m.key == 0 && !m.dialing && now >= m.next_dial) dial_member(m);
    }
    for (auto& [key, w] : workers) {
      if (now - w.last_seen > std::chrono::milliseconds(options.heartbeat_timeout_ms)) {
        spdlog::warn("event=worker_heartbeat_timeout worker_id={} silent_ms={}", w.info.worker_id(),
                     std::chrono::duration_cast<std::chrono::milliseconds>(now - w.last_seen).count());
        w.conn->close();  // its close handler fails the requests
      }
    }
    std::vector<std::string> stalled;
    for (auto& [id, a] : active) {
      if (now - a.last_activity > std::chrono::milliseconds(options.request_timeout_ms)) stalled.push_back(id);
    }
    for (const auto& id : stalled) {
      fail(id, ApiError{504, "no output from the worker for " + std::to_string(options.request_timeout_ms) + " ms", "", ""},
           true);
    }
    if (draining && (active.empty() || now > drain_deadline)) {
      spdlog::info("event=drained remaining_requests={}", active.size());
      stop_now();
      return;
    }
    io().post_after(100, [this] { tick(); });
  }

  void stop_now() {
    if (stopped) return;
    stopped = true;
    registry->close();
    for (auto& [key, w] : workers) w.conn->close();
    http->stop();
  }

  // ---- HTTP -----------------------------------------------------------------------------------

  void reply_error(HttpExchange& ex, const ApiError& error, const HttpHeaders& headers = {}) {
    metrics.add("tandem_http_errors_total", labels({{"status", std::to_string(error.status)}}));
    ex.respond(error.status, "application/json", error_body(error), headers);
  }

  void handle(std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& req = ex->request();
    const std::string& path = req.path;
    metrics.add("tandem_http_requests_total", "");
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (req.method != "POST") return reply_error(*ex, ApiError{405, "use POST for " + path, "", ""});
      return handle_generate(std::move(ex), path == "/v1/chat/completions");
    }
    if (path == "/health") {
      if (req.method != "GET") return reply_error(*ex, ApiError{405, "use GET for /health", "", ""});
      std::string reason;
      if (draining) reason = "draining";
      else if (!any_decode_worker()) reason = "no worker that can decode is registered";
      if (!reason.empty()) return reply_error(*ex, ApiError{503, reason, "", ""});
      return ex->respond(200, "application/json", R"({"status":"ok"})", {});
    }
    if (path == "/v1/models" && req.method == "GET") return handle_models(*ex);
    if (path == "/metrics" && req.method == "GET") {
      return ex->respond(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(), {});
    }
    if (path == "/v1/tandem/router") return handle_router_config(std::move(ex));
    reply_error(*ex, ApiError{404, "no route " + req.method + " " + path, "", "not_found_error"});
  }

  bool any_decode_worker() const {
    for (const auto& [key, w] : workers) {
      if (routable(w) && w.can_decode()) return true;
    }
    return false;
  }

  std::vector<std::string> model_names() const {
    std::set<std::string> names;
    if (!options.served_model_name.empty()) names.insert(options.served_model_name);
    for (const auto& [key, w] : workers) {
      if (routable(w) && w.can_decode() && options.served_model_name.empty()) names.insert(w.info.model());
    }
    return {names.begin(), names.end()};
  }

  void handle_models(HttpExchange& ex) {
    json data = json::array();
    int max_len = 0;
    for (const auto& [key, w] : workers) {
      if (w.registered && w.can_decode()) max_len = std::max(max_len, w.info.max_model_len());
    }
    for (const auto& name : model_names()) {
      data.push_back({{"id", name}, {"object", "model"}, {"created", std::time(nullptr)}, {"owned_by", "tandem"},
                      {"root", name}, {"max_model_len", max_len}});
    }
    ex.respond(200, "application/json", json{{"object", "list"}, {"data", data}}.dump(), {});
  }

  json router_config_json() const {
    json j = {{"max_local_prefill", options.router.max_local_prefill}, {"max_prefill_queue", options.router.max_prefill_queue}};
    if (cluster_mode()) j["source"] = "etcd:" + key_prefix() + "disagg/";
    return j;
  }

  // GET reads the thresholds; POST changes them: here (embedded registry), or in etcd (cluster mode,
  // so that every frontend applies them from its watch).
  void handle_router_config(std::shared_ptr<HttpExchange> ex) {
    const HttpRequest& req = ex->request();
    if (req.method == "GET") return ex->respond(200, "application/json", router_config_json().dump(), {});
    if (req.method != "POST" && req.method != "PUT") return reply_error(*ex, ApiError{405, "use GET or POST", "", ""});
    if (!options.admin_token.empty()) {
      const std::string* auth = req.header("authorization");
      if (!auth || *auth != "Bearer " + options.admin_token) {
        return reply_error(*ex, ApiError{401, "changing the router needs Authorization: Bearer <admin token>", "", ""});
      }
    } else if (!req.peer_is_loopback) {
      return reply_error(*ex, ApiError{403, "the router is changed from localhost only (or set --admin-token)", "", ""});
    }
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) return reply_error(*ex, ApiError{400, "the body is not a JSON object", "", ""});
    std::vector<std::pair<std::string, std::string>> changes;
    for (const char* name : {"max_local_prefill", "max_prefill_queue"}) {
      if (!body.contains(name)) continue;
      if (!body[name].is_number_integer() || body[name].get<int64_t>() < 0 || body[name].get<int64_t>() > INT32_MAX) {
        return reply_error(*ex, ApiError{400, std::string("'") + name + "' must be a non-negative integer", name, ""});
      }
      changes.emplace_back(name, std::to_string(body[name].get<int64_t>()));
    }
    if (!cluster_mode()) {
      for (const auto& [name, value] : changes) apply_threshold(name, value, "admin");
      return ex->respond(200, "application/json", router_config_json().dump(), {});
    }
    // etcd answers off the I/O thread; the reply comes back through the gate.
    auto g = gate;
    std::thread([this, g, ex, changes, endpoints = options.etcd, prefix = key_prefix()] {
      cluster::EtcdClient client(endpoints);
      Status s;
      for (const auto& [name, value] : changes) {
        s = client.put(prefix + "disagg/" + name, value);
        if (!s.ok()) break;
      }
      g->post([this, ex, changes, s] {
        if (!s.ok()) return reply_error(*ex, ApiError{503, "etcd did not take the change: " + s.message(), "", ""});
        // Applied here at once too (the watch brings the same values again, a no-op).
        for (const auto& [name, value] : changes) apply_threshold(name, value, "admin");
        ex->respond(200, "application/json", router_config_json().dump(), {});
      });
    }).detach();
  }

  std::string new_request_id(const std::string* x_request_id) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%08llx%06llx", static_cast<unsigned long long>(rng() & 0xffffffffu),
                  static_cast<unsigned long long>(next_request++ & 0xffffff));
    if (x_request_id && !x_request_id->empty() && x_request_id->size() <= 128) return *x_request_id + "-" + buffer;
    return buffer;
  }

  void handle_generate(std::shared_ptr<HttpExchange> ex, bool chat) {
    const Clock::time_point arrival = Clock::now();
    const std::string* xrid = ex->request().header("x-request-id");
    Active a;
    a.id = new_request_id(xrid);
    a.x_request_id = xrid && !xrid->empty() ? *xrid : a.id;
    HttpHeaders headers = {{"X-Request-Id", a.x_request_id}};
    if (draining) return reply_error(*ex, ApiError{503, "the server is draining", "", ""}, headers);
    if (auto error = parse_generation_request(ex->request().body, chat, &a.req)) {
      return reply_error(*ex, *error, headers);
    }
    GenerationRequest& req = a.req;
    auto names = model_names();
    if (names.empty()) return reply_error(*ex, ApiError{503, "no worker that can decode is registered", "", ""}, headers);
    if (req.model.empty()) {
      a.model = names.front();
    } else if (std::find(names.begin(), names.end(), req.model) == names.end()) {
      return reply_error(*ex, ApiError{404, "The model `" + req.model + "` does not exist.", "model", "not_found_error"},
                         headers);
    } else {
      a.model = req.model;
    }

    // Tokenize.
    std::vector<int32_t> prompt;
    if (chat) {
      if (!codec) return reply_error(*ex, ApiError{400, "chat needs a tokenizer: start the frontend with --tokenizer", "messages", ""}, headers);
      auto text = codec->render_chat(req.messages, req.add_generation_prompt);
      if (!text.ok()) return reply_error(*ex, ApiError{400, text.status().message(), "messages", ""}, headers);
      prompt = codec->encode(*text, /*add_special_tokens=*/false);
    } else if (req.prompt_text) {
      if (!codec) return reply_error(*ex, ApiError{400, "text prompts need a tokenizer: send token ids or start the frontend with --tokenizer", "prompt", ""}, headers);
      prompt = codec->encode(*req.prompt_text, /*add_special_tokens=*/true);
    } else {
      prompt = req.prompt_ids;
    }
    if (prompt.empty()) return reply_error(*ex, ApiError{400, "the prompt is empty", chat ? "messages" : "prompt", ""}, headers);

    // Route among the workers serving this model.
    std::vector<Candidate> candidates;
    std::vector<WorkerRecord*> records;
    const int cluster_prefill_queue = gather_candidates(a.model, prompt, /*excluded=*/0, &candidates, &records);
    const int prompt_len = static_cast<int>(prompt.size());
    const bool disaggregable = req.sampling.n() == 1 && (!req.max_tokens_given || req.sampling.max_tokens() > 1);
    const int queue_depth = queue_mode()     ? static_cast<int>(this->queue_depth) + queue_sent_since_poll
                            : cluster_mode() ? cluster_prefill_queue
                                             : prefill_queue;
    Decision d = route(candidates, prompt_len, queue_depth, disaggregable, options.router);
    if (d.remote && queue_mode() && !queue_up) {
      d.remote = false;
      d.prefill = -1;
      d.reason = "prefill_queue_unavailable";
    }
    if (d.decode < 0) return reply_error(*ex, ApiError{503, "no worker that can decode is registered", "", ""}, headers);
    WorkerRecord& decoder = *records[d.decode];

    // Limits of the chosen worker's model.
    const int max_len = decoder.info.max_model_len();
    const int vocab = decoder.info.vocab_size();
    for (int32_t t : prompt) {
      if (vocab > 0 && t >= vocab) {
        return reply_error(*ex, ApiError{400, "token id " + std::to_string(t) + " is outside the vocabulary (size " +
                                                  std::to_string(vocab) + ")", "prompt", ""}, headers);
      }
    }
    if (max_len > 0 && prompt_len >= max_len) {
      return reply_error(*ex, ApiError{413, "the prompt has " + std::to_string(prompt_len) +
                                                " tokens; this model's context is " + std::to_string(max_len) + " tokens",
                                       chat ? "messages" : "prompt", ""}, headers);
    }
    if (!req.max_tokens_given) {
      int room = max_len > 0 ? max_len - prompt_len : options.default_max_tokens;
      req.sampling.set_max_tokens(chat ? std::min(room, options.default_max_tokens) : std::min(room, 16));
    } else if (max_len > 0 && prompt_len + req.sampling.max_tokens() > max_len) {
      return reply_error(*ex, ApiError{400, "max_tokens " + std::to_string(req.sampling.max_tokens()) + " + prompt " +
                                                std::to_string(prompt_len) + " tokens is over this model's context of " +
                                                std::to_string(max_len), "max_tokens", ""}, headers);
    }

    spdlog::info("event=route request_id={} decision={} reason={} prompt_tokens={} uncached_tokens={} decode_worker={}{}{} "
                 "prefill_queue={} max_local_prefill={} max_prefill_queue={}",
                 a.id, d.remote ? "remote" : "local", d.reason, prompt_len, d.uncached_tokens, decoder.info.worker_id(),
                 d.remote ? " prefill_worker=" : "", d.remote ? records[d.prefill]->info.worker_id() : "", queue_depth,
                 options.router.max_local_prefill, options.router.max_prefill_queue);
    metrics.add("tandem_router_decisions_total", labels({{"decision", d.remote ? "remote" : "local"}, {"reason", d.reason}}));

    rpc::pb::Envelope env;
    auto* g = env.mutable_generate();
    g->set_request_id(a.id);
    g->mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    *g->mutable_sampling() = req.sampling;
    if (d.remote) {
      // Through the queue any prefill worker may take it; directly, the one chosen here.
      if (queue_mode()) {
        g->set_remote_prefill_queue(true);
      } else {
        g->set_remote_prefill_address(records[d.prefill]->info.rpc_address());
      }
      g->set_remote_prefill_timeout_ms(options.remote_prefill_timeout_ms);
    }
    if (!decoder.conn->send(env)) {
      return reply_error(*ex, ApiError{503, "decode worker " + decoder.info.worker_id() + " is gone", "", ""}, headers);
    }
    if (!decoder.info.no_prefix_caching()) decoder.prefix->insert(prompt);
    decoder.outstanding++;
    decoder.sent_since_heartbeat++;
    decoder.requests.insert(a.id);
    if (d.remote && queue_mode()) {
      a.remote = true;
      ++queue_sent_since_poll;
    } else if (d.remote) {
      a.remote = true;
      a.prefill_key = records[d.prefill]->key;
      records[d.prefill]->prefills_outstanding++;
      records[d.prefill]->prefills_sent_since_heartbeat++;
      ++prefill_queue;
    }
    a.response_id = std::string(chat ? "chatcmpl-" : "cmpl-") + a.id;
    a.created = std::time(nullptr);
    a.exchange = ex;
    a.worker_key = decoder.key;
    a.generate = std::make_shared<rpc::pb::Envelope>(std::move(env));
    a.num_prompt_tokens = prompt_len;
    a.choices.resize(req.sampling.n());
    a.arrival = arrival;
    a.last_activity = Clock::now();
    metrics.add("vllm:prompt_tokens_total", "", prompt_len);
    if (req.stream) {
      ex->start_stream(200, "text/event-stream", headers);
      if (chat) {
        for (int i = 0; i < req.sampling.n(); ++i) {
          json delta = {{"role", "assistant"}, {"content", ""}};
          ex->write(sse(chunk(a, i, delta, nullptr, nullptr)));
        }
      }
    }
    const std::string id = a.id;
    active.emplace(id, std::move(a));
    ex->on_client_gone([this, id] {
      auto it = active.find(id);
      if (it == active.end()) return;
      spdlog::info("event=client_disconnected request_id={}", id);
      metrics.add("tandem_client_disconnects_total", "");
      finish(it->second, /*abort_worker=*/true);
    });
  }

  // ---- outputs --------------------------------------------------------------------------------

  static std::string sse(const json& body) { return "data: " + body.dump() + "\n\n"; }

  json chunk(const Active& a, int index, const json& delta_or_text, const json* logprobs, const char* finish_reason,
             const std::vector<int32_t>* token_ids = nullptr) {
    json choice = {{"index", index}};
    if (a.req.chat) {
      choice["delta"] = delta_or_text;
    } else {
      choice["text"] = delta_or_text;
    }
    choice["logprobs"] = logprobs ? *logprobs : json(nullptr);
    choice["finish_reason"] = finish_reason ? json(finish_reason) : json(nullptr);
    if (!a.req.chat) choice["stop_reason"] = nullptr;
    if (token_ids && a.req.return_token_ids) choice["token_ids"] = *token_ids;
    json body = {{"id", a.response_id},
                 {"object", a.req.chat ? "chat.completion.chunk" : "text_completion"},
                 {"created", a.created},
                 {"model", a.model},
                 {"choices", json::array({choice})}};
    if (a.req.continuous_usage) body["usage"] = usage(a);
    return body;
  }

  json usage(const Active& a) const {
    json u = {{"prompt_tokens", a.num_prompt_tokens},
              {"completion_tokens", a.num_output_tokens},
              {"total_tokens", a.num_prompt_tokens + a.num_output_tokens}};
    if (a.num_cached_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", a.num_cached_tokens}};
    return u;
  }

  std::string token_text(int32_t id) const { return codec ? codec->token_text(id) : "token_id:" + std::to_string(id); }

  // Logprobs of new tokens: the chat shape ({content: [...]}) or the completions shape.
  json logprobs_json(const Active& a, ChoiceState& c, const rpc::pb::Output& out, bool accumulate) {
    if (a.req.chat) {
      json content = json::array();
      for (const auto& lp : out.logprobs()) {
        auto entry = [&](int32_t id, float logprob) {
          std::string t = token_text(id);
          json bytes = json::array();
          for (unsigned char ch : t) bytes.push_back(ch);
          return json{{"token", t}, {"logprob", logprob}, {"bytes", bytes}};
        };
        json e = entry(lp.token_id(), lp.logprob());
        json top = json::array();
        for (const auto& t : lp.top()) top.push_back(entry(t.token_id(), t.logprob()));
        e["top_logprobs"] = top;
        content.push_back(e);
        if (accumulate) c.logprobs_content.push_back(e);
      }
      return json{{"content", content}};
    }
    json part = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                 {"text_offset", json::array()}};
    for (const auto& lp : out.logprobs()) {
      std::string t = token_text(lp.token_id());
      json top = json::object();
      for (const auto& alt : lp.top()) top[token_text(alt.token_id())] = alt.logprob();
      part["tokens"].push_back(t);
      part["token_logprobs"].push_back(lp.logprob());
      part["top_logprobs"].push_back(top);
      part["text_offset"].push_back(c.text_offset);
      c.text_offset += static_cast<int>(t.size());
    }
    if (accumulate) {
      for (const char* key : {"tokens", "token_logprobs", "top_logprobs", "text_offset"}) {
        for (auto& v : part[key]) c.completion_logprobs[key].push_back(v);
      }
    }
    return part;
  }

  void on_output(WorkerRecord& w, const rpc::pb::Output& out) {
    auto it = active.find(out.request_id());
    if (it == active.end()) return;
    Active& a = it->second;
    if (a.worker_key != w.key || out.index() < 0 || out.index() >= static_cast<int>(a.choices.size())) return;
    const auto now = Clock::now();
    a.last_activity = now;
    if (out.prefill().present()) {
      const auto& p = out.prefill();
      if (p.remote()) {
        metrics.add("tandem_remote_prefills_total", "");
        metrics.add("tandem_kv_transfer_bytes_total", "", static_cast<double>(p.kv_bytes()));
        metrics.histogram("tandem_kv_transfer_seconds", "", latency_buckets()).observe(p.transfer_seconds());
      } else {
        metrics.add("tandem_local_prefills_total", "");
      }
      if (p.fell_back()) {
        metrics.add("tandem_remote_prefill_fallbacks_total", "");
        spdlog::warn("event=prefill_fell_back request_id={} reason=\"{}\"", a.id, p.fallback_reason());
      }
    }
    release_prefill_slot(a);
    if (out.finish_reason() == rpc::pb::FINISH_ERROR) {
      auto code = static_cast<StatusCode>(out.error_code());
      // Refused (draining, its device failed) or failed (a device fault) before producing anything:
      // another worker can serve it, and the client never sees the first attempt.
      if ((code == StatusCode::kUnavailable || code == StatusCode::kInternal) && reroute(a, w, "worker_error")) return;
      ApiError error{http_status(code), out.error_message().empty() ? "the worker failed" : out.error_message(), "", ""};
      return fail(a.id, error, /*abort_worker=*/true);
    }
    const int num_new = out.token_ids_size();
    if (num_new > 0) {
      if (!a.seen_first) {
        a.seen_first = true;
        a.first_token = now;
        a.generate.reset();  // past the point of re-routing
        metrics.histogram("vllm:time_to_first_token_seconds", "", latency_buckets()).observe(seconds_between(a.arrival, now));
      } else {
        metrics.histogram("vllm:inter_token_latency_seconds", "", latency_buckets())
            .observe(seconds_between(a.last_token, now) / num_new);
      }
      a.last_token = now;
      a.num_output_tokens += num_new;
      metrics.add("vllm:generation_tokens_total", "", num_new);
    }
    a.num_cached_tokens = std::max(a.num_cached_tokens, out.num_cached_prompt_tokens());
    ChoiceState& c = a.choices[out.index()];
    if (c.finished) return;
    c.text += out.text();
    c.tokens.insert(c.tokens.end(), out.token_ids().begin(), out.token_ids().end());
    json lp;
    const bool has_lp = a.req.top_logprobs >= 0 && out.logprobs_size() > 0;
    if (has_lp) lp = logprobs_json(a, c, out, /*accumulate=*/!a.req.stream);
    const char* reason = nullptr;
    if (out.finished()) {
      c.finished = true;
      c.finish_reason = finish_reason_text(out.finish_reason());
      c.stop_reason = out.stop_reason();
      reason = c.finish_reason.c_str();
      ++a.num_finished;
    }
    if (a.req.stream && (num_new > 0 || !out.text().empty() || out.finished())) {
      std::vector<int32_t> ids(out.token_ids().begin(), out.token_ids().end());
      json body = a.req.chat ? json{{"content", out.text()}} : json(out.text());
      if (a.req.chat && out.text().empty() && num_new == 0) body = json::object();
      a.exchange->write(sse(chunk(a, out.index(), body, has_lp ? &lp : nullptr, reason, &ids)));
    }
    if (a.num_finished == static_cast<int>(a.choices.size())) complete(a);
  }

  // The routable workers serving `model` except the one keyed `excluded` (0: none), as the router sees
  // them; returns the prefill queue depth they report (cluster mode; 0 otherwise).
  int gather_candidates(const std::string& model, std::span<const int32_t> prompt, uint64_t excluded,
                        std::vector<Candidate>* candidates, std::vector<WorkerRecord*>* records) {
    int cluster_prefill_queue = 0;
    for (auto& [key, w] : workers) {
      if (key == excluded || !routable(w) || (w.info.model() != model && options.served_model_name.empty())) continue;
      Candidate c;
      c.can_decode = w.can_decode();
      c.is_prefill = w.is_prefill();
      if (cluster_mode()) {
        // Several frontends share the workers: load as the worker reports it to all of them, plus
        // what this frontend sent since (so that a burst between two heartbeats still spreads).
        const auto& h = w.heartbeat;
        c.outstanding = h.num_running() + h.num_waiting() + h.num_reservations() + w.sent_since_heartbeat;
        c.prefills_outstanding = h.num_prefills_in_flight() + w.prefills_sent_since_heartbeat;
        if (c.is_prefill) cluster_prefill_queue += c.prefills_outstanding;
      } else {
        c.outstanding = w.outstanding;
        c.prefills_outstanding = w.prefills_outstanding;
      }
      c.overlap_tokens = w.prefix && c.can_decode && !w.info.no_prefix_caching() ? w.prefix->overlap(prompt) : 0;
      candidates->push_back(c);
      records->push_back(&w);
    }
    return cluster_prefill_queue;
  }

  // Sends a request that `from` refused or lost before its first token to the worker the router picks
  // among the others, with a local prefill; once per request. False (nothing changed) when the request
  // already produced output, was re-routed before, or no other worker can take it.
  bool reroute(Active& a, WorkerRecord& from, const char* why) {
    if (a.rerouted || a.num_output_tokens > 0 || !a.generate) return false;
    rpc::pb::Generate* g = a.generate->mutable_generate();
    const std::span<const int32_t> prompt(g->prompt_token_ids().data(), static_cast<size_t>(g->prompt_token_ids_size()));
    std::vector<Candidate> candidates;
    std::vector<WorkerRecord*> records;
    gather_candidates(a.model, prompt, from.key, &candidates, &records);
    const Decision d = route(candidates, static_cast<int>(prompt.size()), 0, /*disaggregable=*/false, options.router);
    if (d.decode < 0) return false;
    WorkerRecord* target = records[d.decode];
    g->clear_remote_prefill_address();
    g->set_remote_prefill_queue(false);
    if (!target->conn->send(*a.generate)) return false;
    release_prefill_slot(a);
    from.outstanding--;
    from.requests.erase(a.id);
    target->outstanding++;
    target->sent_since_heartbeat++;
    target->requests.insert(a.id);
    a.worker_key = target->key;
    a.remote = false;
    a.rerouted = true;
    spdlog::warn("event=request_rerouted request_id={} from={} to={} reason={}", a.id, from.info.worker_id(),
                 target->info.worker_id(), why);
    metrics.add("tandem_requests_rerouted_total", labels({{"reason", why}}));
    return true;
  }

  void release_prefill_slot(Active& a) {
    if (a.prefill_key == 0) return;
    auto p = workers.find(a.prefill_key);
    if (p != workers.end()) p->second.prefills_outstanding--;
    a.prefill_key = 0;
    --prefill_queue;
  }

  void complete(Active& a) {
    const auto now = Clock::now();
    metrics.histogram("vllm:e2e_request_latency_seconds", "", latency_buckets()).observe(seconds_between(a.arrival, now));
    std::string reason = a.choices.empty() ? "" : a.choices[0].finish_reason;
    metrics.add("vllm:request_success_total", labels({{"finished_reason", reason}}));
    if (a.req.stream) {
      if (a.req.include_usage) {
        json body = {{"id", a.response_id},
                     {"object", a.req.chat ? "chat.completion.chunk" : "text_completion"},
                     {"created", a.created},
                     {"model", a.model},
                     {"choices", json::array()},
                     {"usage", usage(a)}};
        a.exchange->write(sse(body));
      }
      a.exchange->write("data: [DONE]\n\n");
      a.exchange->end();
    } else {
      json choices = json::array();
      for (size_t i = 0; i < a.choices.size(); ++i) {
        ChoiceState& c = a.choices[i];
        json choice = {{"index", i}};
        if (a.req.chat) {
          choice["message"] = {{"role", "assistant"}, {"content", c.text}};
          choice["logprobs"] = a.req.top_logprobs >= 0 ? json{{"content", c.logprobs_content}} : json(nullptr);
        } else {
          choice["text"] = c.text;
          choice["logprobs"] = a.req.top_logprobs >= 0 ? c.completion_logprobs : json(nullptr);
          choice["stop_reason"] = c.stop_reason.empty() ? json(nullptr) : json(c.stop_reason);
        }
        choice["finish_reason"] = c.finish_reason;
        if (a.req.return_token_ids) choice["token_ids"] = c.tokens;
        choices.push_back(choice);
      }
      json body = {{"id", a.response_id},
                   {"object", a.req.chat ? "chat.completion" : "text_completion"},
                   {"created", a.created},
                   {"model", a.model},
                   {"choices", choices},
                   {"usage", usage(a)}};
      a.exchange->respond(200, "application/json", body.dump(), {{"X-Request-Id", a.x_request_id}});
    }
    spdlog::info("event=request_done request_id={} prompt_tokens={} output_tokens={} remote_prefill={} ttft_ms={:.1f} "
                 "e2e_ms={:.1f}",
                 a.id, a.num_prompt_tokens, a.num_output_tokens, a.remote,
                 a.seen_first ? seconds_between(a.arrival, a.first_token) * 1e3 : -1.0,
                 seconds_between(a.arrival, now) * 1e3);
    finish(a, /*abort_worker=*/false);
  }

  // Ends a request with an error: an error event on a stream, an error body otherwise.
  void fail(const std::string& id, const ApiError& error, bool abort_worker) {
    auto it = active.find(id);
    if (it == active.end()) return;
    Active& a = it->second;
    spdlog::warn("event=request_failed request_id={} status={} reason=\"{}\"", id, error.status, error.message);
    metrics.add("tandem_requests_failed_total", labels({{"status", std::to_string(error.status)}}));
    if (a.req.stream) {
      a.exchange->write("data: " + error_body(error) + "\n\n");
      a.exchange->write("data: [DONE]\n\n");
      a.exchange->end();
    } else {
      a.exchange->respond(error.status, "application/json", error_body(error), {{"X-Request-Id", a.x_request_id}});
    }
    finish(a, abort_worker);
  }

  // Forgets a request; tells its worker to stop it when it may still be running there.
  void finish(Active& a, bool abort_worker) {
    release_prefill_slot(a);
    auto w = workers.find(a.worker_key);
    if (w != workers.end()) {
      w->second.outstanding--;
      w->second.requests.erase(a.id);
      if (abort_worker) {
        rpc::pb::Envelope env;
        env.mutable_abort()->set_request_id(a.id);
        w->second.conn->send(env);
      }
    }
    const std::string id = a.id;  // `a` lives in the map entry being erased
    active.erase(id);
  }

  // ---- metrics --------------------------------------------------------------------------------

  std::string render_metrics() {
    for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                             "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:num_preemptions_total",
                             "tandem_worker_kv_blocks_used", "tandem_worker_kv_blocks_total", "tandem_worker_kv_blocks_cached",
                             "tandem_worker_kv_reservations", "tandem_worker_prefills_in_flight", "tandem_workers",
                             "tandem_worker_kv_transfer_bytes_total", "tandem_worker_remote_prefill_fallbacks_total",
                             "tandem_worker_outstanding_requests", "tandem_worker_info", "tandem_cluster_members"}) {
      metrics.clear(name);
    }
    std::map<std::string, int> by_role;
    for (const auto& [key, w] : workers) {
      if (!w.registered) continue;
      if (routable(w)) by_role[role_label(w.info.role())]++;
      const auto& h = w.heartbeat;
      std::string l = labels({{"worker", w.info.worker_id()}, {"role", role_label(w.info.role())}});
      metrics.set("vllm:num_requests_running", l, h.num_running());
      metrics.set("vllm:num_requests_waiting", l, h.num_waiting());
      metrics.set("vllm:kv_cache_usage_perc", l,
                  h.num_kv_blocks_total() > 0 ? static_cast<double>(h.num_kv_blocks_used()) / h.num_kv_blocks_total() : 0);
      metrics.set("vllm:prefix_cache_queries_total", l, static_cast<double>(h.prefix_cache_queries()));
      metrics.set("vllm:prefix_cache_hits_total", l, static_cast<double>(h.prefix_cache_hits()));
      metrics.set("vllm:num_preemptions_total", l, static_cast<double>(h.num_preemptions()));
      metrics.set("tandem_worker_kv_blocks_used", l, h.num_kv_blocks_used());
      metrics.set("tandem_worker_kv_blocks_total", l, h.num_kv_blocks_total());
      metrics.set("tandem_worker_kv_blocks_cached", l, h.num_kv_blocks_cached());
      metrics.set("tandem_worker_kv_reservations", l, h.num_reservations());
      metrics.set("tandem_worker_prefills_in_flight", l, h.num_prefills_in_flight());
      metrics.set("tandem_worker_kv_transfer_bytes_total", l, static_cast<double>(h.kv_transfer_bytes_total()));
      metrics.set("tandem_worker_remote_prefill_fallbacks_total", l, static_cast<double>(h.remote_prefill_fallbacks_total()));
      metrics.set("tandem_worker_outstanding_requests", l, w.outstanding);
      metrics.set("tandem_worker_info",
                  labels({{"worker", w.info.worker_id()}, {"role", role_label(w.info.role())},
                          {"pid", std::to_string(w.info.pid())}, {"draining", w.draining ? "true" : "false"}}),
                  1);
    }
    for (const char* role : {"prefill", "decode", "both"}) metrics.set("tandem_workers", labels({{"role", role}}), by_role[role]);
    if (cluster_mode()) {
      std::map<std::string, int> listed;
      for (const auto& [id, m] : members) listed[m.role]++;
      for (const char* role : {"prefill", "decode", "both"}) {
        metrics.set("tandem_cluster_members", labels({{"role", role}}), listed[role]);
      }
    }
    metrics.set("tandem_prefill_queue_depth", "", queue_mode() ? static_cast<double>(queue_depth) : prefill_queue);
    metrics.set("tandem_requests_active", "", static_cast<double>(active.size()));
    metrics.set("tandem_router_max_local_prefill", "", options.router.max_local_prefill);
    metrics.set("tandem_router_max_prefill_queue", "", options.router.max_prefill_queue);
    return metrics.render();
  }

  void describe_metrics() {
    metrics.describe("vllm:time_to_first_token_seconds", "histogram", "Time to first token, at the frontend.");
    metrics.describe("vllm:inter_token_latency_seconds", "histogram", "Time between output tokens, at the frontend.");
    metrics.describe("vllm:e2e_request_latency_seconds", "histogram", "Request latency, arrival to last token.");
    metrics.describe("vllm:prompt_tokens_total", "counter", "Prompt tokens of accepted requests.");
    metrics.describe("vllm:generation_tokens_total", "counter", "Output tokens streamed.");
    metrics.describe("vllm:request_success_total", "counter", "Requests finished, by finish reason.");
    metrics.describe("tandem_router_decisions_total", "counter", "Routing decisions, by decision and reason.");
    metrics.describe("tandem_remote_prefills_total", "counter", "Requests whose prefill ran on a prefill worker.");
    metrics.describe("tandem_local_prefills_total", "counter", "Requests prefilled on their decode worker.");
    metrics.describe("tandem_remote_prefill_fallbacks_total", "counter", "Remote prefills that failed and were redone locally.");
    metrics.describe("tandem_prefill_queue_depth", "gauge", "Remote prefills routed and waiting for their first token.");
    metrics.describe("tandem_kv_transfer_bytes_total", "counter", "KV bytes moved from prefill to decode workers.");
    metrics.describe("tandem_kv_transfer_seconds", "histogram", "Time of one request's KV push.");
    metrics.describe("tandem_worker_kv_blocks_used", "gauge", "KV blocks in use on a worker (last heartbeat).");
    for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                             "tandem_worker_kv_blocks_total", "tandem_worker_kv_blocks_cached", "tandem_worker_kv_reservations",
                             "tandem_worker_prefills_in_flight", "tandem_workers", "tandem_worker_outstanding_requests",
                             "tandem_requests_active", "tandem_router_max_local_prefill", "tandem_router_max_prefill_queue",
                             "tandem_cluster_members",
                             "tandem_worker_info"}) {
      metrics.describe(name, "gauge", "");
    }
    for (const char* name : {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:num_preemptions_total",
                             "tandem_worker_kv_transfer_bytes_total", "tandem_worker_remote_prefill_fallbacks_total",
                             "tandem_http_requests_total", "tandem_http_errors_total", "tandem_requests_failed_total",
                             "tandem_client_disconnects_total", "tandem_requests_rerouted_total"}) {
      metrics.describe(name, "counter", "");
    }
    for (const char* name : {"tandem_remote_prefills_total", "tandem_local_prefills_total",
                             "tandem_remote_prefill_fallbacks_total", "tandem_kv_transfer_bytes_total",
                             "vllm:prompt_tokens_total", "vllm:generation_tokens_total"}) {
      metrics.add(name, "", 0);
    }
  }
};

Frontend::Frontend(FrontendOptions options, std::unique_ptr<PromptCodec> codec) : impl_(std::make_unique<Impl>()) {
  Impl* impl = impl_.get();
  impl->options = std::move(options);
  impl->codec = std::move(codec);
  impl->http = std::make_unique<HttpServer>(
      impl->options.http, [impl](std::shared_ptr<HttpExchange> ex) { impl->handle(std::move(ex)); },
      [impl] {
        impl->metrics.add("tandem_http_errors_total", labels({{"status", "413"}}));
        return std::make_pair(
            error_body(ApiError{413, "the request body is over the limit of " +
                                         std::to_string(impl->options.http.max_body_bytes) + " bytes", "", ""}),
            std::string("application/json"));
      });
  impl->gate->io = &impl->http->executor();
  if (impl->options.frontend_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    impl->options.frontend_id = std::string(host) + "-" + std::to_string(getpid());
  }
  auto registry = net::Listener::bind(impl->options.registry_host, impl->options.registry_port);
  if (!registry.ok()) throw Error("--registry-port: " + registry.status().message());
  impl->registry = std::move(*registry);
  impl->describe_metrics();
  if (!impl->options.prefill_queue.empty()) {
    cluster::PrefillQueueOptions q;
    q.url = impl->options.prefill_queue;
    q.cluster_namespace = impl->options.cluster_namespace;
    auto queue = cluster::PrefillQueue::connect(q);
    if (!queue.ok()) throw Error("--prefill-queue: " + queue.status().message());
    impl->queue = std::move(*queue);
  }
}

Frontend::~Frontend() {
  if (impl_->watcher) impl_->watcher->stop();
  impl_->stop_queue_poller();
  if (impl_->registry) impl_->registry->close();
  impl_->gate->close();
  for (auto& [key, w] : impl_->workers) w.conn->close();
  // Their reader threads are detached: wait for them to finish (the close handlers find the gate
  // closed), so none is still running when main returns and the logger is torn down.
  for (auto& [key, w] : impl_->workers) w.conn->wait_closed(std::chrono::seconds(2));
}

uint16_t Frontend::http_port() const { return impl_->http->port(); }
uint16_t Frontend::registry_port() const { return impl_->registry->port(); }

void Frontend::run() {
  Impl* impl = impl_.get();
  impl->start_registry();
  if (impl->cluster_mode()) impl->start_watcher();
  if (impl->queue_mode()) impl->start_queue_poller();
  impl->io().post_after(100, [impl] { impl->tick(); });
  if (!impl->options.ready_file.empty()) {
    std::string tmp = impl->options.ready_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << json{{"http_port", http_port()}, {"registry_port", registry_port()}}.dump() << "\n";
    }
    std::filesystem::rename(tmp, impl->options.ready_file);
  }
  spdlog::info("event=frontend_listening frontend_id={} http_port={} registry_port={} registry={}",
               impl->options.frontend_id, http_port(), registry_port(),
               impl->cluster_mode() ? "etcd:" + impl->key_prefix() : std::string("embedded"));
  impl->http->run();
  if (impl->watcher) impl->watcher->stop();
  impl->stop_queue_poller();
  impl->registry->close();
}

void Frontend::stop() {
  Impl* impl = impl_.get();
  impl->io().post([impl] { impl->stop_now(); });
}

void Frontend::drain(int deadline_ms) {
  Impl* impl = impl_.get();
  impl->io().post([impl, deadline_ms] {
    if (impl->draining) return;
    impl->draining = true;
    impl->drain_deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
    spdlog::info("event=draining active_requests={} deadline_ms={}", impl->active.size(), deadline_ms);
  });
}

}  // namespace tandem::frontend
