// The life of one generation request at the frontend (DESIGN.md §2 steps 1, 2 and 4): validate and
// tokenize, route it (router.h) among the workers the directory offers, send it to the decode
// worker, stream its outputs back (openai_responses.h), and end it: complete, failed, timed out,
// aborted by a client that left, or sent once to another worker when its first one refused or lost it
// before producing anything; a stream whose worker is lost after its first tokens migrates to another
// worker and continues where it was (--migration-limit).
//
// Ownership: owns the requests in flight and their HTTP exchanges; borrows the directory, the metrics,
// the router thresholds (changed by the admin endpoint while serving) and the codec, which must
// outlive it.
// Thread-safety: none; every method runs on the frontend's I/O thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "frontend/chat_reply.h"
#include "frontend/http.h"
#include "frontend/metrics.h"
#include "frontend/openai.h"
#include "frontend/openai_responses.h"
#include "frontend/prompt_codec.h"
#include "frontend/reasoning_parser.h"
#include "frontend/router.h"
#include "frontend/worker_directory.h"

namespace tandem::frontend {

struct LifecycleOptions {
  int remote_prefill_timeout_ms = 30000;  // passed to decode workers: then they prefill locally
  int request_timeout_ms = 600000;        // a request with no output for this long fails (504)
  int request_deadline_ms = 0;            // a request not done this long after arrival fails (504); 0 = none
  int default_max_tokens = 1024;          // chat requests without max_tokens: min(this, room left)
  std::vector<std::string> served_model_name;  // empty = the model names workers register with
  ReasoningFormat reasoning = ReasoningFormat::kNone;  // --reasoning-parser: chat replies split the think block
  ToolParserKind tool_parser = ToolParserKind::kNone;  // --tool-call-parser: chat replies with tools read for calls
  int migration_limit = 3;  // --migration-limit: times a stream moves on after losing its decode worker
};

// Answers `error` as OpenAI does (error_body) and counts it in tandem_http_errors_total.
void respond_error(HttpExchange& ex, Metrics& metrics, const ApiError& error, const HttpHeaders& headers = {});

class RequestLifecycle {
 public:
  // `codec` may be null (token-id prompts only).
  RequestLifecycle(LifecycleOptions options, const RouterOptions& router, WorkerDirectory& directory,
                   Metrics& metrics, const PromptCodec* codec);

  // POST /v1/completions (chat = false) and /v1/chat/completions: answers an error at once, or takes
  // the request in flight until it ends.
  void start(std::shared_ptr<HttpExchange> exchange, bool chat);
  // From the directory (DirectoryEvents).
  void on_output(WorkerKey worker, const rpc::pb::Output& output);
  void on_worker_lost(WorkerKey worker, const std::string& name, const Status& reason,
                      const std::vector<std::string>& requests);
  // Fails (504, or an error event on a stream) the requests without output for request_timeout_ms by
  // `now`, and those past their deadline (request_deadline_ms after arrival), aborting them on their worker.
  void expire_stalled(Clock::time_point now);

  // New requests get 503 from here on; the running ones go on.
  void set_draining() { draining_ = true; }
  bool draining() const { return draining_; }
  size_t num_active() const { return active_.size(); }

 private:
  // The client's side of a batched completions request (several prompts): what its parts share.
  struct Batch {
    std::vector<std::string> parts;     // the parts' request ids, by prompt
    std::vector<ChoiceState> choices;   // every prompt's choices, in response order (batch_choice_index)
    std::vector<TokenUsage> usage;      // by prompt, as far as each has got
    int remaining = 0;                  // parts not complete yet
    bool failed = false;                // the client got an error; the other parts were aborted
  };

  // One stream at a decode worker carrying some of a request's choices. A request starts as one leg
  // under its own id that carries every choice (the worker's output index is the choice). When a
  // stream of several choices migrates, each unfinished choice goes on alone (n = 1) as a leg of its
  // own, under split_leg_id(); a stream of one choice keeps its one leg and its id.
  struct Leg {
    std::string id;              // the worker-side request id
    WorkerKey worker = 0;        // its decode worker
    int choice = -1;             // the one choice it carries (its output index 0); -1: every choice
    WorkerKey prefill_slot = 0;  // held in the prefill queue until its first output (directory)
  };

  struct Request {
    std::string id;           // the internal request id (unique among live requests)
    std::string x_request_id;
    GenerationRequest req;
    ResponseContext response;
    std::shared_ptr<HttpExchange> exchange;
    std::vector<Leg> legs;       // where its unfinished choices run; one until a migration splits it
    bool remote = false;         // a prefill of it was sent to a prefill worker (logs)
    bool seen_first = false;
    TokenUsage usage;
    std::vector<ChoiceState> choices;
    int num_finished = 0;
    Clock::time_point arrival, first_token, last_token, last_activity;
    // What was sent to the decode worker, kept until its first token: a request that worker refuses
    // or loses before producing anything is sent once to another worker (reroute()). With
    // --migration-limit > 0 it is kept to the end, for migrate().
    std::shared_ptr<rpc::pb::Envelope> generate;
    bool rerouted = false;
    // Chat with --reasoning-parser, or with tools and --tool-call-parser: one per choice.
    std::vector<ChatReplyParser> parsers;
    int migrations = 0;               // times it moved on after losing a decode worker mid-stream (migrate())
    std::vector<int64_t> text_bytes;  // by choice: bytes of its text received, what the client has
    std::shared_ptr<Batch> batch;            // a part of a batched request; null for a single prompt
    int batch_prompt = 0;                    // the part's prompt index in the batch
  };

  void reply_error(HttpExchange& ex, const ApiError& error, const HttpHeaders& headers);
  std::string new_request_id(const std::string* x_request_id);
  // The prompt's token ids, or the error to answer. `think_open` (may be null): a chat prompt that
  // ends inside an open think block.
  std::optional<ApiError> tokenize(const GenerationRequest& req, std::vector<int32_t>* prompt, bool* think_open) const;
  std::optional<ApiError> launch(Request& r, std::vector<int32_t> prompt);
  void start_batch(Request base, const HttpHeaders& headers);
  // Checks the prompt against the decode worker's model and fills in max_tokens when not given.
  std::optional<ApiError> fit_to_model(const rpc::pb::Register& worker, std::span<const int32_t> prompt,
                                       GenerationRequest* req) const;
  // The request and leg that a worker-side request id names; {nullptr, nullptr} when none is live.
  std::pair<Request*, Leg*> find_leg(const std::string& leg_id);
  // REQUIRES: `leg` is one of r.legs. Both may change the legs (`leg` is then gone) only when they
  // return true.
  bool reroute(Request& r, Leg& leg, const char* why);
  bool migrate(Request& r, Leg& leg, const char* why);
  // Forgets one of r.legs (its choice finished, or its worker is gone): its prefill slot and its count
  // on its worker.
  void drop_leg(Request& r, const std::string& leg_id);
  void release_prefill(Leg& leg);
  void complete(Request& r);
  void fail(const std::string& id, const ApiError& error, bool abort_worker);
  void finish(Request& r, bool abort_worker);
  std::string token_text(int32_t id) const;
  // The random number and turn the router's stateful modes take, one per routing.
  RouteDraw next_draw();

  LifecycleOptions options_;
  const RouterOptions& router_;
  WorkerDirectory& directory_;
  Metrics& metrics_;
  const PromptCodec* codec_;
  std::map<std::string, Request> active_;
  std::map<std::string, std::string> split_legs_;  // a split leg's id -> its request's id
  bool draining_ = false;
  uint64_t next_request_ = 1;
  uint64_t route_turn_ = 0;
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace tandem::frontend
