// Test doubles for the frontend's request path: a worker directory whose workers are plain records
// (what was sent to each is kept), an HTTP exchange that records its response, and a prompt codec
// that spells each byte as one token.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "frontend/http.h"
#include "frontend/prompt_codec.h"
#include "frontend/request_lifecycle.h"
#include "frontend/worker_directory.h"

namespace tandem::frontend::testing {

class FakeDirectory : public WorkerDirectory {
 public:
  struct Worker {
    rpc::pb::Register info;
    rpc::pb::Heartbeat heartbeat;
    bool routable = true;
    bool accepts = true;  // false: send() fails, as on a closed connection
    int outstanding = 0;
    int prefills_held = 0;
    std::set<std::string> requests;
    std::vector<rpc::pb::Envelope> sent;
    int prompts_noted = 0;
  };

  WorkerKey add(const std::string& id, rpc::pb::Role role, int max_model_len = 0, int vocab_size = 0,
                const std::string& model = "m") {
    const WorkerKey key = next_key_++;
    Worker& w = workers[key];
    w.info.set_worker_id(id);
    w.info.set_role(role);
    w.info.set_model(model);
    w.info.set_rpc_address(id + ":1");
    w.info.set_max_model_len(max_model_len);
    w.info.set_vocab_size(vocab_size);
    return key;
  }
  // What the worker was sent last (REQUIRES: something was).
  const rpc::pb::Envelope& last_sent(WorkerKey key) { return workers.at(key).sent.back(); }

  std::map<WorkerKey, Worker> workers;
  int prefills_held = 0;
  bool remote_prefill_up = true;

  void set_events(DirectoryEvents) override {}
  void start() override {}
  void tick(Clock::time_point) override {}
  void close() override {}
  void stop_threads() override {}
  void shutdown() override {}
  uint16_t registry_port() const override { return 0; }
  std::string description() const override { return "fake"; }

  RoutingPool pool(const std::string& model, std::span<const int32_t>, WorkerKey excluded) const override {
    RoutingPool pool;
    for (const auto& [key, w] : workers) {
      if (key == excluded || !w.routable || w.info.model() != model) continue;
      Candidate c;
      c.can_decode = w.info.role() != rpc::pb::ROLE_PREFILL;
      c.is_prefill = w.info.role() == rpc::pb::ROLE_PREFILL;
      c.outstanding = w.outstanding;
      c.prefills_outstanding = w.prefills_held;
      pool.candidates.push_back(c);
      pool.keys.push_back(key);
    }
    pool.prefill_queue = prefills_held;
    pool.remote_prefill_up = remote_prefill_up;
    return pool;
  }
  const rpc::pb::Register* info(WorkerKey key) const override {
    auto it = workers.find(key);
    return it == workers.end() ? nullptr : &it->second.info;
  }
  bool send(WorkerKey key, const rpc::pb::Envelope& message) override {
    auto it = workers.find(key);
    if (it == workers.end() || !it->second.accepts) return false;
    it->second.sent.push_back(message);
    return true;
  }
  void address_remote_prefill(WorkerKey prefill_worker, rpc::pb::Generate* generate) const override {
    generate->set_remote_prefill_address(workers.at(prefill_worker).info.rpc_address());
  }
  void note_prompt(WorkerKey key, std::span<const int32_t>) override { workers.at(key).prompts_noted++; }
  void assign(WorkerKey key, const std::string& id) override {
    auto it = workers.find(key);
    if (it == workers.end()) return;
    it->second.outstanding++;
    it->second.requests.insert(id);
  }
  void unassign(WorkerKey key, const std::string& id) override {
    auto it = workers.find(key);
    if (it == workers.end()) return;
    it->second.outstanding--;
    it->second.requests.erase(id);
  }
  WorkerKey hold_prefill(WorkerKey prefill_worker) override {
    workers.at(prefill_worker).prefills_held++;
    ++prefills_held;
    return prefill_worker;
  }
  void release_prefill(WorkerKey slot) override {
    auto it = workers.find(slot);
    if (it != workers.end()) it->second.prefills_held--;
    --prefills_held;
  }
  void for_each_worker(const std::function<void(const WorkerView&)>& visit) const override {
    for (const auto& [key, w] : workers) {
      WorkerView v;
      v.key = key;
      v.info = &w.info;
      v.heartbeat = &w.heartbeat;
      v.registered = true;
      v.routable = w.routable;
      v.outstanding = w.outstanding;
      visit(v);
    }
  }
  double prefill_queue_gauge() const override { return prefills_held; }
  std::optional<std::map<std::string, int>> listed_members() const override { return std::nullopt; }
  std::string thresholds_source() const override { return ""; }
  void store_thresholds(ThresholdChanges, std::function<void(Status)> done) override { done(Status()); }

 private:
  WorkerKey next_key_ = 1;
};

class FakeExchange : public HttpExchange {
 public:
  explicit FakeExchange(std::string body, std::string method = "POST") {
    request_.method = std::move(method);
    request_.body = std::move(body);
  }
  const HttpRequest& request() const override { return request_; }
  void respond(int status, const std::string& content_type, std::string body, const HttpHeaders& headers) override {
    this->status = status;
    this->content_type = content_type;
    this->body = std::move(body);
    this->headers = headers;
    ended = true;
  }
  void start_stream(int status, const std::string& content_type, const HttpHeaders& headers) override {
    this->status = status;
    this->content_type = content_type;
    this->headers = headers;
  }
  void write(std::string data) override { events.push_back(std::move(data)); }
  void end() override { ended = true; }
  void on_client_gone(std::function<void()> callback) override { gone_ = std::move(callback); }
  bool client_gone() const override { return false; }

  // The client leaves.
  void leave() {
    if (gone_) gone_();
  }
  nlohmann::json json_body() const { return nlohmann::json::parse(body); }
  // The JSON payload of stream event `i` ("data: {...}\n\n").
  nlohmann::json event(size_t i) const { return nlohmann::json::parse(events.at(i).substr(6)); }

  HttpRequest request_;
  int status = 0;
  std::string content_type;
  std::string body;
  HttpHeaders headers;
  std::vector<std::string> events;
  bool ended = false;

 private:
  std::function<void()> gone_;
};

// One token per byte; token id = the byte's value.
class ByteCodec : public PromptCodec {
 public:
  std::vector<int32_t> encode(const std::string& text, bool) const override {
    return std::vector<int32_t>(text.begin(), text.end());
  }
  StatusOr<std::string> render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json&, bool,
                                    const nlohmann::json&) const override {
    std::string text;
    for (const auto& m : messages) text += m.value("content", "");
    return text;
  }
  std::string token_text(int32_t id) const override { return std::string(1, static_cast<char>(id)); }
};

// The request lifecycle over a fake directory, as its tests set it up: a test sets options_ and adds
// workers to directory_ before its first lifecycle() call, which builds the lifecycle from them.
template <class Codec = ByteCodec>
class LifecycleFixture : public ::testing::Test {
 protected:
  RequestLifecycle& lifecycle() {
    if (!lifecycle_) lifecycle_ = std::make_unique<RequestLifecycle>(options_, router_, directory_, metrics_, &codec_);
    return *lifecycle_;
  }
  std::shared_ptr<FakeExchange> start(const std::string& body, bool chat = false) {
    auto ex = std::make_shared<FakeExchange>(body);
    lifecycle().start(ex, chat);
    return ex;
  }

  LifecycleOptions options_;
  RouterOptions router_;
  FakeDirectory directory_;
  Metrics metrics_;
  Codec codec_;
  std::unique_ptr<RequestLifecycle> lifecycle_;
};

}  // namespace tandem::frontend::testing
