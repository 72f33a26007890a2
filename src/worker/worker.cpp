// Worker (see worker.h): request plane handlers, the remote prefill protocol on both sides, and the
// registry connection with its heartbeats.
#include "worker/worker.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "cluster/etcd.h"
#include "cluster/keys.h"
#include "cluster/prefill_queue.h"
#include "common/error.h"
#include "common/prefix_index.h"
#include "common/socket.h"
#include "rpc/connection.h"
#include "worker/convert.h"

namespace tandem::worker {

Role parse_role(const std::string& text) {
  if (text == "prefill") return Role::kPrefill;
  if (text == "decode") return Role::kDecode;
  if (text == "both") return Role::kBoth;
  throw Error("--role: unknown role '" + text + "' (use prefill, decode or both)");
}

const char* role_name(Role role) {
  switch (role) {
    case Role::kPrefill: return "prefill";
    case Role::kDecode: return "decode";
    case Role::kBoth: return "both";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;
using rpc::Connection;

// The device path goes through the backend's export/copy methods; descriptors are KvExports in their
// text form (backend::encode_kv_export), parsed once per peer.
class BackendKvMemory : public transfer::KvMemory {
 public:
  explicit BackendKvMemory(backend::Backend& backend) : backend_(backend) {}
  int num_layers() const override { return backend_.kv_cache_spec().num_layers; }
  int num_blocks() const override { return backend_.kv_cache_spec().num_blocks; }
  size_t block_bytes() const override { return backend_.kv_cache_spec().block_bytes(); }
  Status read_block(int layer, int block, std::span<std::byte> out) override {
    return backend_.read_kv_block(layer, block, out);
  }
  Status write_block(int layer, int block, std::span<const std::byte> in) override {
    return backend_.write_kv_block(layer, block, in);
  }
  StatusOr<std::string> export_device_handles() override {
    auto exported = backend_.export_kv_handles();
    if (!exported.ok()) return exported.status();
    return backend::encode_kv_export(*exported);
  }
  bool can_reach(const std::string& peer_handles) override {
    auto peer = parse(peer_handles);
    return peer.ok() && backend_.can_reach_peer(**peer);
  }
  // Copies arrive layer-major with the same blocks in every layer (Worker::run_push): runs of layers
  // with identical block lists go in one backend call, so all layers of a prompt move in one launch.
  Status copy_to_peer(const std::string& peer_handles, std::span<const transfer::BlockCopy> copies) override {
    auto peer = parse(peer_handles);
    if (!peer.ok()) return peer.status();
    std::vector<std::vector<int32_t>> local(num_layers()), remote(num_layers());
    for (const auto& c : copies) {
      if (c.layer < 0 || c.layer >= num_layers()) return Status::InvalidArgument("KV copy names layer " + std::to_string(c.layer));
      local[c.layer].push_back(c.src_block);
      remote[c.layer].push_back(c.dst_block);
    }
    int begin = 0;
    while (begin < num_layers()) {
      int end = begin + 1;
      while (end < num_layers() && local[end] == local[begin] && remote[end] == remote[begin]) ++end;
      if (!local[begin].empty()) {
        TANDEM_RETURN_IF_ERROR(backend_.copy_blocks_to_peer(**peer, local[begin], remote[begin], begin, end));
      }
      begin = end;
    }
    return Status::Ok();
  }

 private:
  StatusOr<const backend::KvExport*> parse(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(text);
    if (it == peers_.end()) {
      auto decoded = backend::decode_kv_export(text);
      if (!decoded.ok()) return decoded.status();
      it = peers_.emplace(text, std::move(*decoded)).first;
    }
    return &it->second;  // std::map nodes stay put; entries are never erased
  }

  backend::Backend& backend_;
  std::mutex mu_;
  std::map<std::string, backend::KvExport> peers_;  // GUARDED_BY(mu_): parsed peer descriptors
};

rpc::pb::Role to_proto(Role role) {
  switch (role) {
    case Role::kPrefill: return rpc::pb::ROLE_PREFILL;
    case Role::kDecode: return rpc::pb::ROLE_DECODE;
    case Role::kBoth: return rpc::pb::ROLE_BOTH;
  }
  return rpc::pb::ROLE_UNSPECIFIED;
}

// A remote prefill this (decode) worker is waiting on.
struct PendingPrefill {
  bool done = false;
  bool aborted = false;
  const void* via = nullptr;  // the connection it was sent on (null: through the queue)
  rpc::pb::RemotePrefillResult result;
};

// A job for the prefill side's transfer threads: push a finished kPrefillOnly request's KV.
struct PushJob {
  rpc::pb::RemotePrefill request;
  engine::RequestOutput output;
  std::weak_ptr<Connection> reply_to;
  std::shared_ptr<cluster::PrefillQueue::Message> queued;  // acknowledged once the result is sent
};

}  // namespace

std::shared_ptr<transfer::KvMemory> backend_kv_memory(backend::Backend& backend) {
  return std::make_shared<BackendKvMemory>(backend);
}

struct Worker::Impl : std::enable_shared_from_this<Worker::Impl> {
  WorkerOptions options;
  std::unique_ptr<engine::Engine> engine;
  std::shared_ptr<transfer::KvMemory> kv_memory;
  std::unique_ptr<transfer::TransferBackend> transfer;
  std::unique_ptr<net::Listener> rpc_listener;
  std::atomic<bool> stop{false};
  std::atomic<int> stop_requests{0};
  bool drain_announced = false;
  Clock::time_point drain_deadline;
  std::atomic<int64_t> drain_started_ms{0};  // steady-clock ms when the drain was announced; 0 = not yet

  std::mutex mu;
  std::condition_variable cv;
  std::shared_ptr<Connection> frontend;                          // GUARDED_BY(mu)
  std::map<std::string, std::weak_ptr<Connection>> owners;      // GUARDED_BY(mu): request -> where outputs go
  std::map<std::string, std::shared_ptr<PendingPrefill>> pending;  // GUARDED_BY(mu): decode side
  std::map<std::string, std::shared_ptr<Connection>> peers;     // GUARDED_BY(mu): prefill workers by address
  std::set<std::shared_ptr<Connection>> incoming;               // GUARDED_BY(mu): decode workers' connections
  std::deque<PushJob> push_jobs;                                // GUARDED_BY(mu)
  std::set<std::shared_ptr<Connection>> frontends;              // GUARDED_BY(mu): cluster mode, frontends that dialed us
  std::map<std::string, nlohmann::json> kv_descriptors;         // GUARDED_BY(mu): decode workers' /kv/<id>, read once
  std::vector<net::Endpoint> etcd_endpoints;                    // cluster mode
  std::unique_ptr<cluster::EtcdLease> lease;
  std::unique_ptr<cluster::PrefillQueue> queue;  // --prefill-queue
  std::thread pull_thread;
  // Prefix summary published to the frontends (routing data shared by all of them).
  std::unique_ptr<PrefixIndex> prefix_index;        // GUARDED_BY(mu)
  std::vector<uint64_t> prefix_added;               // GUARDED_BY(mu): since the last heartbeat round
  bool prefix_reset = false;                        // GUARDED_BY(mu)
  std::vector<std::thread> push_threads;
  std::atomic<int> prefills_in_flight{0};
  std::atomic<int64_t> transfer_bytes{0};
  std::atomic<int64_t> transfers{0};
  std::atomic<int64_t> transfer_micros{0};
  std::atomic<int64_t> fallbacks{0};
  std::atomic<int> reservations{0};

  Status device_failure;  // GUARDED_BY(mu): set once the engine's device failed

  // Drain first when there is a frontend to tell; a second request (or no frontend) stops at once.
  void request_stop() {
    bool connected;
    {
      std::lock_guard<std::mutex> lock(mu);
      connected = cluster_mode() || (frontend && frontend->is_open());
    }
    if (stop_requests.fetch_add(1) > 0 || !connected) stop.store(true);
    cv.notify_all();
  }

  // On the engine thread, once: the engine has failed every request it held. The worker leaves like
  // on SIGTERM (the frontends stop routing here, requests still in flight get the engine's refusal),
  // and run() returns so the process exits and its supervisor starts a fresh one on a new context.
  void on_device_lost(const Status& failure) {
    {
      std::lock_guard<std::mutex> lock(mu);
      device_failure = failure;
    }
    spdlog::error("event=worker_device_failed worker_id={} error=\"{}\" action=exit", options.worker_id, failure.message());
    request_stop();
  }

  bool decodes() const { return options.role != Role::kPrefill; }
  bool drain_grace_over() const {
    const int64_t started = drain_started_ms.load();
    // Not yet announced (SIGTERM seen, the loop has not told the frontends): still inside the grace.
    return started != 0 && now_ms() - started > kDrainGraceMs;
  }
  static int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
  }
  // How long a draining worker still takes requests routed before its frontends heard of the drain
  // (counted from the announcement); it does not call itself drained before this has passed, so a request
  // routed late is finished, not cut off by the exit.
  static constexpr int64_t kDrainGraceMs = 2000;
  bool cluster_mode() const { return !etcd_endpoints.empty(); }
  std::string key_prefix() const { return cluster::key_prefix(options.cluster_namespace); }
  bool prefills() const { return options.role != Role::kDecode; }

  // ---- outputs to the frontend -------------------------------------------------------------

  void send_output(const std::string& request_id, rpc::pb::Envelope& env, bool finished) {
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = owners.find(request_id);
      if (it == owners.end()) return;
      conn = it->second.lock();
      if (finished) owners.erase(it);
    }
    if (conn) conn->send(env);
  }

  void send_error(const std::string& request_id, const Status& status, int n) {
    for (int i = 0; i < n; ++i) {
      rpc::pb::Envelope env;
      auto* out = env.mutable_output();
      out->set_request_id(request_id);
      out->set_index(i);
      out->set_finished(true);
      out->set_finish_reason(rpc::pb::FINISH_ERROR);
      out->set_error_code(static_cast<int32_t>(status.code()));
      out->set_error_message(status.message());
      send_output(request_id, env, i == n - 1);
    }
  }

  // Submits to the engine; every engine output goes to the request's owner. `info` rides on the
  // first output (where prefill ran).
  void submit(engine::Request request, rpc::pb::PrefillInfo info,
              std::optional<rpc::pb::TokenLogprobs> first_logprobs = std::nullopt) {
    const std::string id = request.request_id;
    const int n = request.sampling.n;
    auto remaining = std::make_shared<std::atomic<int>>(n);
    auto first = std::make_shared<std::atomic<bool>>(true);
    auto self = shared_from_this();
    Status status = engine->submit(std::move(request), [self, remaining, first, info,
                                                        first_logprobs](engine::RequestOutput out) {
      rpc::pb::Envelope env;
      to_proto(out, env.mutable_output());
      if (first->exchange(false)) {
        if (info.present()) *env.mutable_output()->mutable_prefill() = info;
        if (first_logprobs && env.output().logprobs_size() == 0 && env.output().token_ids_size() > 0) {
          *env.mutable_output()->add_logprobs() = *first_logprobs;
        }
      }
      bool last = out.finished && remaining->fetch_sub(1) == 1;
      self->send_output(out.request_id, env, last);
    });
    if (!status.ok()) send_error(id, status, n);
  }

  // ---- decode side ----------------------------------------------------------------------------

  void on_generate(const rpc::pb::Generate& g, const std::shared_ptr<Connection>& conn) {
    engine::Request request;
    request.request_id = g.request_id();
    request.prompt_token_ids.assign(g.prompt_token_ids().begin(), g.prompt_token_ids().end());
    request.sampling = from_proto(g.sampling());
    {
      std::lock_guard<std::mutex> lock(mu);
      owners[g.request_id()] = conn;
      if (decodes() && prefix_index && prefix_index->insert(request.prompt_token_ids, &prefix_added)) {
        prefix_reset = true;
        prefix_added = prefix_index->hashes();
      }
    }
    if (!decodes()) {
      send_error(g.request_id(), Status::InvalidArgument("a prefill worker does not decode"), request.sampling.n);
      return;
    }
    // A request already on the wire when the frontends heard of the drain is still served: only
    // after a grace period (the frontends have stopped routing here) is a new one refused.
    if (stop_requests.load() > 0 && drain_grace_over()) {
      send_error(g.request_id(), Status::Unavailable("worker " + options.worker_id + " is draining"), request.sampling.n);
      return;
    }
    if (g.remote_prefill_address().empty() && !g.remote_prefill_queue()) {
      rpc::pb::PrefillInfo info;
      info.set_present(true);
      submit(std::move(request), info);
      return;
    }
    int timeout_ms = g.remote_prefill_timeout_ms() > 0 ? g.remote_prefill_timeout_ms() : options.remote_prefill_timeout_ms;
    // The remote prefill waits (dial, prefill, push); a thread of its own keeps the reader free.
    std::thread([self = shared_from_this(), request = std::move(request), address = g.remote_prefill_address(),
                 timeout_ms]() mutable { self->remote_prefill(std::move(request), address, timeout_ms); })
        .detach();
  }

  // A prefill worker's answer, on the connection we dialed it on or (queue) one it dialed us on.
  void on_prefill_result(const rpc::pb::RemotePrefillResult& r) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = pending.find(r.request_id());
    if (it == pending.end()) return;
    it->second->done = true;
    it->second->result = r;
    cv.notify_all();
  }

  void fall_back(engine::Request request, const std::string& reason) {
    spdlog::warn("event=remote_prefill_fallback request_id={} reason=\"{}\"", request.request_id, reason);
    fallbacks.fetch_add(1);
    rpc::pb::PrefillInfo info;
    info.set_present(true);
    info.set_fell_back(true);
    info.set_fallback_reason(reason);
    request.prefill_mode = engine::PrefillMode::kLocal;
    submit(std::move(request), info);
  }

  std::shared_ptr<Connection> peer(const std::string& address, Status* error) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = peers.find(address);
      if (it != peers.end() && it->second->is_open()) return it->second;
    }
    auto dialed = Connection::dial(address, options.dial_timeout_ms);
    if (!dialed.ok()) {
      *error = dialed.status();
      return nullptr;
    }
    auto conn = *dialed;
    std::weak_ptr<Impl> weak = shared_from_this();
    const void* raw = conn.get();
    conn->start(
        [weak](rpc::pb::Envelope& env) {
          auto self = weak.lock();
          if (!self || !env.has_remote_prefill_result()) return;
          self->on_prefill_result(env.remote_prefill_result());
        },
        [weak, address, raw](const Status& reason) {
          auto self = weak.lock();
          if (!self) return;
          // Everything sent on this connection fails now and falls back (only this one: a duplicate
          // dialed by a racing thread and closed at once must not fail the others' prefills).
          std::lock_guard<std::mutex> lock(self->mu);
          for (auto& [id, p] : self->pending) {
            if (p->done || p->via != raw) continue;
            p->done = true;
            p->result.set_error_code(static_cast<int32_t>(StatusCode::kUnavailable));
            p->result.set_error_message("prefill worker " + address + ": " + reason.message());
          }
          self->cv.notify_all();
        });
    std::lock_guard<std::mutex> lock(mu);
    auto& slot = peers[address];
    if (slot && slot->is_open()) {
      conn->close();
      return slot;
    }
    slot = conn;
    return conn;
  }

  void remote_prefill(engine::Request request, const std::string& address, int timeout_ms) {
    const std::string id = request.request_id;
    auto reservation = engine->reserve_kv(id, request.prompt_token_ids);
    if (!reservation.ok()) return fall_back(std::move(request), "reserve_failed: " + reservation.status().message());
    reservations.fetch_add(1);
    auto release = [&] {
      engine->release_blocks(id);
      reservations.fetch_sub(1);
    };
    const bool via_queue = address.empty();
    if (via_queue && !queue) {
      release();
      return fall_back(std::move(request), "no_prefill_queue: this worker was started without --prefill-queue");
    }
    Status error;
    std::shared_ptr<Connection> conn;
    if (!via_queue) {
      conn = peer(address, &error);
      if (!conn) {
        release();
        return fall_back(std::move(request), "prefill_unreachable: " + error.message());
      }
    }
    auto p = std::make_shared<PendingPrefill>();
    p->via = conn.get();
    {
      std::lock_guard<std::mutex> lock(mu);
      pending[id] = p;
    }
    transfer->expect(id, reservation->block_ids);
    const auto& spec = engine->backend().kv_cache_spec();
    rpc::pb::Envelope env;
    auto* rp = env.mutable_remote_prefill();
    rp->set_request_id(id);
    rp->mutable_prompt_token_ids()->Add(request.prompt_token_ids.begin(), request.prompt_token_ids.end());
    rpc::pb::SamplingParams* sp = rp->mutable_sampling();
    const auto& s = request.sampling;
    sp->set_temperature(s.temperature);
    sp->set_top_p(s.top_p);
    sp->set_top_k(s.top_k);
    sp->set_min_p(s.min_p);
    if (s.seed) sp->set_has_seed(true), sp->set_seed(*s.seed);
    sp->set_presence_penalty(s.presence_penalty);
    sp->set_frequency_penalty(s.frequency_penalty);
    sp->set_repetition_penalty(s.repetition_penalty);
    for (auto [tok, bias] : s.logit_bias) sp->add_logit_bias_ids(tok), sp->add_logit_bias_values(bias);
    // The first token is sampled there under the request's own rules (min_tokens masks EOS).
    sp->set_max_tokens(s.max_tokens);
    sp->set_min_tokens(s.min_tokens);
    sp->set_ignore_eos(s.ignore_eos);
    sp->mutable_stop_token_ids()->Add(s.stop_token_ids.begin(), s.stop_token_ids.end());
    sp->set_logprobs(s.logprobs);
    sp->set_n(1);
    sp->set_skip_special_tokens(s.skip_special_tokens);
    rp->set_transfer_address(transfer->address());
    rp->mutable_dest_block_ids()->Add(reservation->block_ids.begin(), reservation->block_ids.end());
    rp->set_num_cached_tokens(reservation->num_cached_tokens);
    rp->set_dest_block_size(spec.block_size);
    rp->set_dest_block_bytes(static_cast<int64_t>(spec.block_bytes()));
    rp->set_dest_num_layers(spec.num_layers);
    rp->set_decode_worker_id(options.worker_id);
    bool sent = false;
    std::string send_error_text;
    if (via_queue) {
      rp->set_reply_address(options.host + ":" + std::to_string(rpc_listener->port()));
      rp->set_deadline_unix_ms(unix_ms() + timeout_ms);
      Status s = queue->publish(env.SerializeAsString());
      sent = s.ok();
      if (!sent) {
        // NATS is down: prefill here now rather than wait out the deadline.
        {
          std::lock_guard<std::mutex> lock(mu);
          pending.erase(id);
        }
        transfer->forget(id);
        release();
        return fall_back(std::move(request), "prefill_queue_unavailable: " + s.message());
      }
    } else {
      sent = conn->send(env);
    }
    bool timed_out = false;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (!sent) {
        p->done = true;
        p->result.set_error_code(static_cast<int32_t>(StatusCode::kUnavailable));
        p->result.set_error_message("connection to prefill worker " + address + " is closed");
      }
      timed_out = !cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return p->done || p->aborted; });
      pending.erase(id);
    }
    // From here no late push can land in the reserved blocks, whatever happens next to them.
    transfer->forget(id);
    if (p->aborted) {
      if (conn) abort_on(conn, id);
      release();
      return finish_aborted(id, request.sampling.n);
    }
    if (timed_out || p->result.error_code() != 0) {
      if (timed_out && conn) abort_on(conn, id);
      release();
      return fall_back(std::move(request), timed_out ? "timeout after " + std::to_string(timeout_ms) + " ms"
                                                     : "prefill_failed: " + p->result.error_message());
    }
    // The KV is in our blocks: decode from it. The engine emits the first token itself; its
    // logprobs (computed on the prefill worker) ride on that first output.
    const auto& r = p->result;
    transfer_bytes.fetch_add(r.kv_bytes());
    rpc::pb::PrefillInfo info;
    info.set_present(true);
    info.set_remote(true);
    info.set_kv_bytes(r.kv_bytes());
    info.set_transfer_seconds(r.transfer_seconds());
    request.prefill_mode = engine::PrefillMode::kDecodeFromKv;
    request.first_token_id = r.first_token_id();
    reservations.fetch_sub(1);  // the engine owns the blocks from here
    std::optional<rpc::pb::TokenLogprobs> first_logprobs;
    if (r.has_logprobs()) first_logprobs = r.first_logprobs();
    // Tell the frontend at once that the prefill is done (an output with no tokens, carrying where the
    // prefill ran): it frees the request's place in the prefill queue. Waiting for the first token
    // would hold that place through this engine's next step, which is long when this worker is busy
    // prefilling locally; on the two-GPU study that starved the prefill worker and sent more prompts
    // to local prefill, which made the steps longer still (docs/disaggregation.md).
    rpc::pb::Envelope done;
    done.mutable_output()->set_request_id(id);
    done.mutable_output()->set_index(0);
    *done.mutable_output()->mutable_prefill() = info;
    send_output(id, done, /*finished=*/false);
    submit(std::move(request), rpc::pb::PrefillInfo{}, first_logprobs);
  }

  void abort_on(const std::shared_ptr<Connection>& conn, const std::string& id) {
    rpc::pb::Envelope env;
    env.mutable_abort()->set_request_id(id);
    conn->send(env);
  }

  void finish_aborted(const std::string& id, int n) {
    for (int i = 0; i < n; ++i) {
      rpc::pb::Envelope env;
      auto* out = env.mutable_output();
      out->set_request_id(id);
      out->set_index(i);
      out->set_finished(true);
      out->set_finish_reason(rpc::pb::FINISH_ABORT);
      send_output(id, env, i == n - 1);
    }
  }

  void on_abort(const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = pending.find(id);
      if (it != pending.end()) {
        it->second->aborted = true;
        cv.notify_all();
        return;
      }
    }
    engine->abort(id);
  }

  // ---- prefill side ---------------------------------------------------------------------------

  void on_remote_prefill(const rpc::pb::RemotePrefill& rp, const std::shared_ptr<Connection>& conn,
                         std::shared_ptr<cluster::PrefillQueue::Message> queued = nullptr) {
    const std::string id = rp.request_id();
    auto reply_error = [conn, id, queued](const Status& status) {
      if (queued) (void)queued->ack();  // an answer went back: redelivering would not help
      rpc::pb::Envelope env;
      auto* r = env.mutable_remote_prefill_result();
      r->set_request_id(id);
      r->set_error_code(static_cast<int32_t>(status.code()));
      r->set_error_message(status.message());
      conn->send(env);
    };
    if (!prefills()) return reply_error(Status::InvalidArgument("a decode worker does not serve remote prefills"));
    const auto& spec = engine->backend().kv_cache_spec();
    if (rp.dest_block_size() != spec.block_size || rp.dest_num_layers() != spec.num_layers ||
        rp.dest_block_bytes() != static_cast<int64_t>(spec.block_bytes())) {
      return reply_error(Status::InvalidArgument("KV geometry differs between prefill and decode workers"));
    }
    if (cluster_mode() && !rp.decode_worker_id().empty()) {
      Status s = check_descriptor(rp);
      if (!s.ok()) return reply_error(s);
    }
    engine::Request request;
    request.request_id = id;
    request.prompt_token_ids.assign(rp.prompt_token_ids().begin(), rp.prompt_token_ids().end());
    request.sampling = from_proto(rp.sampling());
    request.prefill_mode = engine::PrefillMode::kPrefillOnly;
    prefills_in_flight.fetch_add(1);
    std::weak_ptr<Connection> weak_conn = conn;
    auto self = shared_from_this();
    Status status = engine->submit(std::move(request), [self, rp, weak_conn, queued](engine::RequestOutput out) {
      if (!out.finished) return;
      // The engine thread must not block: the push runs on the transfer threads.
      std::lock_guard<std::mutex> lock(self->mu);
      self->push_jobs.push_back(PushJob{rp, std::move(out), weak_conn, queued});
      self->cv.notify_all();
    });
    if (!status.ok()) {
      prefills_in_flight.fetch_sub(1);
      reply_error(status);
    }
  }

  // Cluster mode: the decode worker's KV descriptor from etcd, read once per peer, must agree with
  // what the request says (a stale or foreign sender is refused before any KV moves).
  Status check_descriptor(const rpc::pb::RemotePrefill& rp) {
    const std::string& peer_id = rp.decode_worker_id();
    nlohmann::json d;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = kv_descriptors.find(peer_id);
      if (it != kv_descriptors.end()) d = it->second;
    }
    if (d.is_null()) {
      cluster::EtcdClient client(etcd_endpoints, 1000);
      auto r = client.get(key_prefix() + "kv/" + peer_id);
      // etcd down: the geometry check above still guards the copy; do not fail the request for it.
      if (!r.ok()) return Status::Ok();
      if (r->kvs.empty()) return Status::NotFound("decode worker " + peer_id + " has no KV descriptor in etcd");
      d = nlohmann::json::parse(r->kvs[0].value, nullptr, false);
      if (!d.is_object()) return Status::Corruption("the KV descriptor of " + peer_id + " is not JSON");
      spdlog::info("event=kv_descriptor_read peer={} transfer={}", peer_id, d.value("transfer_address", ""));
      std::lock_guard<std::mutex> lock(mu);
      kv_descriptors[peer_id] = d;
    }
    if (d.value("transfer_address", "") != rp.transfer_address() || d.value("block_size", 0) != rp.dest_block_size() ||
        d.value("num_layers", 0) != rp.dest_num_layers() || d.value("block_bytes", int64_t{0}) != rp.dest_block_bytes()) {
      std::lock_guard<std::mutex> lock(mu);
      kv_descriptors.erase(peer_id);  // it may have restarted: read it again next time
      return Status::InvalidArgument("remote prefill from " + peer_id + " disagrees with its KV descriptor in etcd");
    }
    return Status::Ok();
  }

  void push_loop() {
    while (true) {
      PushJob job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop.load() || !push_jobs.empty(); });
        if (push_jobs.empty()) return;
        job = std::move(push_jobs.front());
        push_jobs.pop_front();
      }
      run_push(job);
      prefills_in_flight.fetch_sub(1);
    }
  }

  void run_push(PushJob& job) {
    const auto& rp = job.request;
    const auto& out = job.output;
    rpc::pb::Envelope env;
    auto* r = env.mutable_remote_prefill_result();
    r->set_request_id(rp.request_id());
    Status status;
    if (out.finish_reason == engine::FinishReason::kError || out.finish_reason == engine::FinishReason::kAbort ||
        out.token_ids.empty()) {
      status = out.error.ok() ? Status::Aborted("prefill aborted") : out.error;
    } else if (out.kv_block_ids.size() < static_cast<size_t>(rp.dest_block_ids_size())) {
      status = Status::Internal("prefill returned fewer KV blocks than the prompt needs");
    } else {
      // Blocks wholly inside the decode worker's cached prefix are already there.
      const int block_size = engine->backend().kv_cache_spec().block_size;
      const int first_block = rp.num_cached_tokens() / block_size;
      std::vector<transfer::BlockCopy> copies;
      for (int layer = 0; layer < rp.dest_num_layers(); ++layer) {
        for (int b = first_block; b < rp.dest_block_ids_size(); ++b) {
          copies.push_back({layer, out.kv_block_ids[b], rp.dest_block_ids(b)});
        }
      }
      auto stats = transfer->push(rp.transfer_address(), rp.request_id(), copies, options.transfer_timeout_ms);
      if (stats.ok()) {
        transfers.fetch_add(1);
        transfer_bytes.fetch_add(stats->num_bytes);
        transfer_micros.fetch_add(static_cast<int64_t>(stats->seconds * 1e6));
        r->set_kv_bytes(stats->num_bytes);
        r->set_transfer_seconds(stats->seconds);
        r->set_first_token_id(out.token_ids[0]);
        r->set_num_cached_prompt_tokens(out.num_cached_prompt_tokens);
        if (!out.logprobs.empty()) {
          r->set_has_logprobs(true);
          to_proto(out.logprobs[0], r->mutable_first_logprobs());
        }
        spdlog::info("event=kv_pushed request_id={} transport={} num_blocks={} num_bytes={} seconds={:.6f} gbps={:.2f}",
                     rp.request_id(), stats->transport, stats->num_blocks, stats->num_bytes, stats->seconds,
                     stats->seconds > 0 ? static_cast<double>(stats->num_bytes) / stats->seconds / 1e9 : 0.0);
      } else {
        status = stats.status();
      }
    }
    engine->release_blocks(rp.request_id());
    if (!status.ok()) {
      r->set_error_code(static_cast<int32_t>(status.code()));
      r->set_error_message(status.message());
    }
    if (auto conn = job.reply_to.lock()) conn->send(env);
    // Acknowledged only now: a worker that dies before this point leaves the message to be
    // delivered again (the decode worker still expects the push until its deadline).
    if (job.queued) (void)job.queued->ack();
  }

  static int64_t unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  // Prefill worker with a queue: pull one message whenever there is room, until draining.
  void pull_loop() {
    bool reported_down = false;
    while (!stop.load() && stop_requests.load() == 0) {
      if (prefills_in_flight.load() >= options.max_pulled_prefills) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      auto pulled = queue->pull(200);
      if (!pulled.ok()) {
        if (!reported_down) {
          spdlog::warn("event=prefill_queue_unavailable worker_id={} reason=\"{}\"; retrying", options.worker_id,
                       pulled.status().message());
          reported_down = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        continue;
      }
      if (reported_down) spdlog::info("event=prefill_queue_reachable worker_id={}", options.worker_id);
      reported_down = false;
      std::shared_ptr<cluster::PrefillQueue::Message> m = std::move(*pulled);
      if (!m) continue;
      rpc::pb::Envelope env;
      if (!env.ParseFromString(m->data()) || !env.has_remote_prefill()) {
        spdlog::warn("event=prefill_queue_bad_message worker_id={} bytes={}", options.worker_id, m->data().size());
        (void)m->ack();
        continue;
      }
      const rpc::pb::RemotePrefill& rp = env.remote_prefill();
      if (rp.deadline_unix_ms() > 0 && unix_ms() > rp.deadline_unix_ms()) {
        // Its decode worker has prefilled locally by now; our push would be refused anyway.
        spdlog::info("event=prefill_skipped_expired request_id={} delivered={}", rp.request_id(), m->num_delivered());
        (void)m->ack();
        continue;
      }
      Status error;
      auto conn = peer(rp.reply_address(), &error);
      if (!conn) {
        spdlog::warn("event=prefill_reply_unreachable request_id={} reply={} reason=\"{}\"", rp.request_id(),
                     rp.reply_address(), error.message());
        (void)m->nak();
        continue;
      }
      spdlog::info("event=prefill_pulled request_id={} decode_worker={} delivered={}", rp.request_id(),
                   rp.decode_worker_id(), m->num_delivered());
      on_remote_prefill(rp, conn, std::move(m));
    }
  }

  // ---- connections ----------------------------------------------------------------------------

  void on_message(rpc::pb::Envelope& env, const std::shared_ptr<Connection>& conn) {
    switch (env.msg_case()) {
      case rpc::pb::Envelope::kGenerate: on_generate(env.generate(), conn); break;
      case rpc::pb::Envelope::kAbort: on_abort(env.abort().request_id()); break;
      case rpc::pb::Envelope::kRemotePrefill: on_remote_prefill(env.remote_prefill(), conn); break;
      case rpc::pb::Envelope::kRemotePrefillResult: on_prefill_result(env.remote_prefill_result()); break;
      case rpc::pb::Envelope::kFrontendHello: {
        // The engine's stats are read before taking mu: an engine may call back into us (taking mu)
        // while holding its own lock.
        rpc::pb::Envelope beat = heartbeat();
        std::lock_guard<std::mutex> lock(mu);
        frontends.insert(conn);
        conn->send(registration());
        add_full_prefix_locked(beat);
        conn->send(beat);
        if (drain_announced) {
          rpc::pb::Envelope d;
          d.mutable_drain()->set_worker_id(options.worker_id);
          conn->send(d);
        }
        spdlog::info("event=frontend_connected worker_id={} frontend={} peer={}", options.worker_id,
                     env.frontend_hello().frontend_id(), conn->peer());
        break;
      }
      case rpc::pb::Envelope::kRegisterAck:
        if (!env.register_ack().ok()) spdlog::error("event=register_refused reason=\"{}\"", env.register_ack().error());
        break;
      default: break;
    }
  }

  // Aborts every request whose outputs were going to `conn` (its peer is gone).
  void abort_owned_by(const std::shared_ptr<Connection>& conn) {
    std::vector<std::string> ids;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto& [id, owner] : owners) {
        auto o = owner.lock();
        if (!o || o == conn) ids.push_back(id);
      }
    }
    for (const auto& id : ids) on_abort(id);
  }

  void start_rpc_listener() {
    std::weak_ptr<Impl> weak = shared_from_this();
    rpc_listener->start([weak](int fd, std::string peer) {
      auto self = weak.lock();
      if (!self) return;
      auto conn = Connection::adopt(fd, peer);
      {
        std::lock_guard<std::mutex> lock(self->mu);
        self->incoming.insert(conn);
      }
      std::weak_ptr<Connection> weak_conn = conn;
      conn->start(
          [weak, weak_conn](rpc::pb::Envelope& env) {
            auto self = weak.lock();
            auto c = weak_conn.lock();
            if (self && c) self->on_message(env, c);
          },
          [weak, weak_conn](const Status&) {
            auto self = weak.lock();
            auto c = weak_conn.lock();
            if (!self || !c) return;
            bool was_frontend;
            {
              std::lock_guard<std::mutex> lock(self->mu);
              self->incoming.erase(c);
              was_frontend = self->frontends.erase(c) > 0;
            }
            // A frontend that went away takes its requests with it: free their blocks.
            if (was_frontend) self->abort_owned_by(c);
          });
    });
  }

  rpc::pb::Envelope registration() const {
    rpc::pb::Envelope env;
    auto* r = env.mutable_register_();
    r->set_worker_id(options.worker_id);
    r->set_role(to_proto(options.role));
    r->set_model(options.model_name);
    r->set_rpc_address(options.host + ":" + std::to_string(rpc_listener->port()));
    r->set_transfer_address(transfer->address());
    const auto& spec = engine->backend().kv_cache_spec();
    r->set_num_kv_blocks(spec.num_blocks);
    r->set_block_size(spec.block_size);
    r->set_max_model_len(engine->backend().config().max_position_embeddings);
    r->set_vocab_size(engine->backend().config().vocab_size);
    r->set_pid(static_cast<int32_t>(getpid()));
    r->set_no_prefix_caching(!options.prefix_caching);
    return env;
  }

  // Makes `env` carry everything in the prefix summary (a new connection). REQUIRES: mu held.
  void add_full_prefix_locked(rpc::pb::Envelope& env) const {
    auto* h = env.mutable_heartbeat();
    h->set_prefix_reset(true);
    if (prefix_index) {
      for (uint64_t x : prefix_index->hashes()) h->add_prefix_blocks_added(x);
    }
  }

  // The next heartbeat round: what the summary gained since the last one, the same for every frontend.
  rpc::pb::Envelope delta_heartbeat() {
    rpc::pb::Envelope env = heartbeat();
    auto* h = env.mutable_heartbeat();
    std::lock_guard<std::mutex> lock(mu);
    h->set_prefix_reset(prefix_reset);
    h->mutable_prefix_blocks_added()->Add(prefix_added.begin(), prefix_added.end());
    prefix_added.clear();
    prefix_reset = false;
    return env;
  }

  rpc::pb::Envelope heartbeat() const {
    engine::EngineStats s = engine->stats();
    rpc::pb::Envelope env;
    auto* h = env.mutable_heartbeat();
    h->set_worker_id(options.worker_id);
    h->set_num_running(s.num_running);
    h->set_num_waiting(s.num_waiting);
    h->set_num_kv_blocks_total(s.num_kv_blocks_total);
    h->set_num_kv_blocks_used(s.num_kv_blocks_used);
    h->set_num_kv_blocks_cached(s.num_kv_blocks_cached);
    h->set_prefix_cache_queries(s.prefix_cache_queries);
    h->set_prefix_cache_hits(s.prefix_cache_hits);
    h->set_num_preemptions(s.num_preemptions);
    h->set_prompt_tokens_total(s.prompt_tokens_total);
    h->set_generation_tokens_total(s.generation_tokens_total);
    h->set_num_prefills_in_flight(prefills_in_flight.load());
    h->set_num_reservations(reservations.load());
    h->set_kv_transfer_bytes_total(transfer_bytes.load());
    h->set_kv_transfers_total(transfers.load());
    h->set_kv_transfer_seconds_total(static_cast<double>(transfer_micros.load()) / 1e6);
    h->set_remote_prefill_fallbacks_total(fallbacks.load());
    return env;
  }

  // ---- cluster mode ---------------------------------------------------------------------------

  nlohmann::json record() const {
    const rpc::pb::Envelope env = registration();
    const auto& r = env.register_();
    return {{"worker_id", r.worker_id()}, {"role", role_name(options.role)}, {"model", r.model()},
            {"rpc_address", r.rpc_address()}, {"transfer_address", r.transfer_address()},
            {"num_kv_blocks", r.num_kv_blocks()}, {"block_size", r.block_size()}, {"max_model_len", r.max_model_len()},
            {"vocab_size", r.vocab_size()}, {"pid", r.pid()}};
  }

  nlohmann::json kv_descriptor() const {
    const auto& spec = engine->backend().kv_cache_spec();
    return {{"worker_id", options.worker_id}, {"backend", transfer->name()}, {"transfer_address", transfer->address()},
            {"num_layers", spec.num_layers}, {"num_blocks", spec.num_blocks}, {"block_size", spec.block_size},
            {"block_bytes", static_cast<int64_t>(spec.block_bytes())}};
  }

  void send_to_frontends(const rpc::pb::Envelope& env) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& f : frontends) f->send(env);
  }

  // Registered in etcd under a lease; frontends dial in. Heartbeats go to every frontend connected.
  void run_cluster() {
    std::map<std::string, std::string> keys;
    keys[key_prefix() + "workers/" + role_name(options.role) + "/" + options.worker_id] = record().dump();
    if (decodes()) keys[key_prefix() + "kv/" + options.worker_id] = kv_descriptor().dump();
    lease = std::make_unique<cluster::EtcdLease>(cluster::EtcdClient(etcd_endpoints), options.lease_ttl_s, keys);
    while (!stop.load()) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(drain_announced ? 50 : options.heartbeat_ms),
                    [&] { return stop.load() || (stop_requests.load() > 0 && !drain_announced); });
      }
      if (stop.load()) break;
      if (stop_requests.load() > 0 && !drain_announced) {
        // Tell the frontends first (they stop routing here at once), then leave etcd for good.
        rpc::pb::Envelope env;
        env.mutable_drain()->set_worker_id(options.worker_id);
        {
          std::lock_guard<std::mutex> lock(mu);
          drain_announced = true;
          for (const auto& f : frontends) f->send(env);
        }
        drain_deadline = Clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
        drain_started_ms.store(now_ms());
        spdlog::info("event=draining worker_id={} deadline_ms={}", options.worker_id, options.drain_timeout_ms);
        lease->stop(/*revoke=*/true);
      }
      if (drain_announced && ((idle() && drain_grace_over()) || Clock::now() > drain_deadline)) {
        spdlog::info("event=drained worker_id={} idle={}", options.worker_id, idle());
        send_to_frontends(delta_heartbeat());
        break;
      }
      send_to_frontends(delta_heartbeat());
    }
    stop.store(true);
    lease->stop(/*revoke=*/true);
    shutdown();
  }

  void run() {
    for (int i = 0; i < 2; ++i) push_threads.emplace_back([this] { push_loop(); });
    if (queue && prefills()) pull_thread = std::thread([this] { pull_loop(); });
    start_rpc_listener();
    spdlog::info("event=worker_started worker_id={} role={} rpc_port={} kv_transport={} transfer={}", options.worker_id,
                 role_name(options.role), rpc_listener->port(), transfer->name(), transfer->address());
    if (cluster_mode()) return run_cluster();
    while (!stop.load()) {
      auto dialed = Connection::dial(options.frontend, options.dial_timeout_ms);
      if (!dialed.ok()) {
        spdlog::debug("event=frontend_unreachable frontend={} reason=\"{}\"", options.frontend, dialed.status().message());
        std::unique_lock<std::mutex> lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(options.reconnect_ms), [&] { return stop.load(); });
        continue;
      }
      auto conn = *dialed;
      std::weak_ptr<Impl> weak = shared_from_this();
      std::weak_ptr<Connection> weak_conn = conn;
      conn->start(
          [weak, weak_conn](rpc::pb::Envelope& env) {
            auto self = weak.lock();
            auto c = weak_conn.lock();
            if (self && c) self->on_message(env, c);
          },
          [weak](const Status&) {
            if (auto self = weak.lock()) self->cv.notify_all();
          });
      conn->send(registration());
      {
        rpc::pb::Envelope beat = heartbeat();  // before mu (see kFrontendHello)
        std::lock_guard<std::mutex> lock(mu);
        add_full_prefix_locked(beat);
        conn->send(beat);
        prefix_added.clear();
        prefix_reset = false;
      }
      spdlog::info("event=registered worker_id={} frontend={}", options.worker_id, options.frontend);
      {
        std::lock_guard<std::mutex> lock(mu);
        frontend = conn;
      }
      while (!stop.load() && conn->is_open()) {
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait_for(lock, std::chrono::milliseconds(drain_announced ? 50 : options.heartbeat_ms),
                      [&] { return stop.load() || !conn->is_open() || (stop_requests.load() > 0 && !drain_announced); });
        }
        if (stop_requests.load() > 0 && !drain_announced) {
          drain_announced = true;
          drain_deadline = Clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
          drain_started_ms.store(now_ms());
          rpc::pb::Envelope env;
          env.mutable_drain()->set_worker_id(options.worker_id);
          conn->send(env);
          spdlog::info("event=draining worker_id={} deadline_ms={}", options.worker_id, options.drain_timeout_ms);
        }
        if (drain_announced && ((idle() && drain_grace_over()) || Clock::now() > drain_deadline)) {
          spdlog::info("event=drained worker_id={} idle={}", options.worker_id, idle());
          conn->send(heartbeat());
          stop.store(true);
          break;
        }
        if (conn->is_open()) conn->send(delta_heartbeat());
      }
      if (!stop.load()) spdlog::warn("event=frontend_lost worker_id={} frontend={}", options.worker_id, options.frontend);
      conn->close();
      abort_owned_by(conn);
    }
    shutdown();
  }

  // Nothing held: no request, no remote prefill either way, no KV push queued.
  bool idle() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!owners.empty() || !pending.empty() || !push_jobs.empty()) return false;
    }
    engine::EngineStats s = engine->stats();
    return prefills_in_flight.load() == 0 && reservations.load() == 0 && s.num_running == 0 && s.num_waiting == 0;
  }

  void shutdown() {
    std::vector<std::shared_ptr<Connection>> closing;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (frontend) closing.push_back(frontend);
      for (auto& [address, c] : peers) closing.push_back(c);
      closing.insert(closing.end(), incoming.begin(), incoming.end());
    }
    for (auto& c : closing) c->close();
    cv.notify_all();
    if (pull_thread.joinable()) pull_thread.join();
    rpc_listener->close();
    transfer->shutdown();
    for (auto& t : push_threads) t.join();
    push_threads.clear();
    // Their reader threads are detached and run the close handlers (which take `mu`): wait for them, so
    // none is still finishing when main returns and the logger is torn down.
    for (auto& c : closing) c->wait_closed(std::chrono::seconds(2));
  }
};

Worker::Worker(WorkerOptions options, std::unique_ptr<engine::Engine> engine) : impl_(std::make_shared<Impl>()) {
  if (options.worker_id.empty()) options.worker_id = std::string(role_name(options.role)) + "-" + std::to_string(getpid());
  impl_->options = std::move(options);
  impl_->engine = std::move(engine);
  std::weak_ptr<Impl> weak = impl_;
  impl_->engine->set_on_device_lost([weak](const Status& failure) {
    if (auto self = weak.lock()) self->on_device_lost(failure);
  });
  impl_->kv_memory = backend_kv_memory(impl_->engine->backend());
  impl_->prefix_index = std::make_unique<PrefixIndex>(std::max(1, impl_->engine->backend().kv_cache_spec().block_size));
  impl_->transfer = transfer::create_transfer_backend(impl_->options.kv_transfer, impl_->kv_memory, impl_->options.host,
                                                      impl_->options.transfer_port);
  auto listener = net::Listener::bind(impl_->options.host, impl_->options.rpc_port);
  if (!listener.ok()) throw Error("--rpc-port: " + listener.status().message());
  impl_->rpc_listener = std::move(*listener);
  if (!impl_->options.registry.empty()) {
    auto endpoints = cluster::parse_etcd_url(impl_->options.registry);
    if (!endpoints.ok()) throw Error("--registry: " + endpoints.status().message());
    impl_->etcd_endpoints = std::move(*endpoints);
  }
  if (!impl_->options.prefill_queue.empty()) {
    cluster::PrefillQueueOptions q;
    q.url = impl_->options.prefill_queue;
    q.cluster_namespace = impl_->options.cluster_namespace;
    q.ack_wait_ms = impl_->options.prefill_queue_ack_wait_ms;
    auto queue = cluster::PrefillQueue::connect(q);
    if (!queue.ok()) throw Error("--prefill-queue: " + queue.status().message());
    impl_->queue = std::move(*queue);
  }
}

Worker::~Worker() = default;

void Worker::run() { impl_->run(); }

void Worker::request_stop() { impl_->request_stop(); }

Status Worker::device_failure() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->device_failure;
}

}  // namespace tandem::worker
