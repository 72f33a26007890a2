// The life of one generation request at the frontend (see request_lifecycle.h).
#include "frontend/request_lifecycle.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "structured/spec.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// The worker-side id of choice `choice` of request `id` once it runs alone: ids of requests end in
// hex digits, so none equals one of these.
std::string split_leg_id(const std::string& id, int choice) { return id + "~c" + std::to_string(choice); }

}  // namespace

void respond_error(HttpExchange& ex, Metrics& metrics, const ApiError& error, const HttpHeaders& headers) {
  metrics.add("tandem_http_errors_total", labels({{"status", std::to_string(error.status)}}));
  ex.respond(error.status, "application/json", error_body(error), headers);
}

RequestLifecycle::RequestLifecycle(LifecycleOptions options, const RouterOptions& router, WorkerDirectory& directory,
                                   Metrics& metrics, const PromptCodec* codec)
    : options_(std::move(options)), router_(router), directory_(directory), metrics_(metrics), codec_(codec) {}

void RequestLifecycle::reply_error(HttpExchange& ex, const ApiError& error, const HttpHeaders& headers) {
  respond_error(ex, metrics_, error, headers);
}

std::string RequestLifecycle::new_request_id(const std::string* x_request_id) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%08llx%06llx", static_cast<unsigned long long>(rng_() & 0xffffffffu),
                static_cast<unsigned long long>(next_request_++ & 0xffffff));
  if (x_request_id && !x_request_id->empty() && x_request_id->size() <= 128) return *x_request_id + "-" + buffer;
  return buffer;
}

std::optional<ApiError> RequestLifecycle::tokenize(const GenerationRequest& req, std::vector<int32_t>* prompt,
                                                   bool* think_open) const {
  if (req.chat) {
    if (!codec_) return ApiError::bad_request("chat needs a tokenizer: start the frontend with --tokenizer", "messages");
    auto text = codec_->render_chat(req.messages, req.tools.template_tools(), req.add_generation_prompt,
                                    req.chat_template_kwargs);
    if (!text.ok()) return ApiError::bad_request(text.status().message(), "messages");
    if (think_open) *think_open = prompt_opens_think(*text);
    *prompt = codec_->encode(*text, /*add_special_tokens=*/false);
  } else if (req.prompt_text) {
    if (!codec_) {
      return ApiError::bad_request("text prompts need a tokenizer: send token ids or start the frontend with --tokenizer",
                                   "prompt");
    }
    *prompt = codec_->encode(*req.prompt_text, /*add_special_tokens=*/true);
  } else {
    *prompt = req.prompt_ids;
  }
  if (prompt->empty()) return ApiError::bad_request("the prompt is empty", req.chat ? "messages" : "prompt");
  return std::nullopt;
}

std::optional<ApiError> RequestLifecycle::fit_to_model(const rpc::pb::Register& worker, std::span<const int32_t> prompt,
                                                       GenerationRequest* req) const {
  const int max_len = worker.max_model_len();
  const int vocab = worker.vocab_size();
  const int prompt_len = static_cast<int>(prompt.size());
  for (int32_t t : prompt) {
    if (vocab > 0 && t >= vocab) {
      return ApiError::bad_request("token id " + std::to_string(t) + " is outside the vocabulary (size " +
                                       std::to_string(vocab) + ")",
                                   "prompt");
    }
  }
  if (max_len > 0 && prompt_len >= max_len) {
    return ApiError::too_large("the prompt has " + std::to_string(prompt_len) + " tokens; this model's context is " +
                                   std::to_string(max_len) + " tokens",
                               req->chat ? "messages" : "prompt");
  }
  if (!req->max_tokens_given) {
    const int room = max_len > 0 ? max_len - prompt_len : options_.default_max_tokens;
    req->sampling.set_max_tokens(req->chat ? std::min(room, options_.default_max_tokens) : std::min(room, 16));
  } else if (max_len > 0 && prompt_len + req->sampling.max_tokens() > max_len) {
    return ApiError::bad_request("max_tokens " + std::to_string(req->sampling.max_tokens()) + " + prompt " +
                                     std::to_string(prompt_len) + " tokens is over this model's context of " +
                                     std::to_string(max_len),
                                 "max_tokens");
  }
  return std::nullopt;
}

void RequestLifecycle::start(std::shared_ptr<HttpExchange> ex, bool chat) {
  const Clock::time_point arrival = Clock::now();
  const std::string* xrid = ex->request().header("x-request-id");
  Request r;
  r.id = new_request_id(xrid);
  r.x_request_id = xrid && !xrid->empty() ? *xrid : r.id;
  const HttpHeaders headers = {{"X-Request-Id", r.x_request_id}};
  if (draining_) return reply_error(*ex, ApiError::unavailable("the server is draining"), headers);
  if (auto error = parse_generation_request(ex->request().body, chat, &r.req)) return reply_error(*ex, *error, headers);
  GenerationRequest& req = r.req;
  if (req.tools.active() && options_.tool_parser == ToolParserKind::kNone) {
    return reply_error(*ex, ApiError::bad_request("tool calling needs the server started with --tool-call-parser "
                                                  "(hermes or llama3_json); send no 'tools', or 'tool_choice': \"none\"",
                                                  "tools"),
                       headers);
  }
  // `required` and a named tool_choice must hold even for a weak model: the reply is constrained to the
  // parser's call form (tool_calls.h says what it is), enforced by the workers like response_format.
  if (auto constraint = tool_call_constraint(req.tools, options_.tool_parser)) {
    if (!req.sampling.guided().empty()) {
      return reply_error(*ex, ApiError::bad_request("a 'tool_choice' that forces a call cannot be combined with "
                                                    "structured output (response_format or guided_*)", "tool_choice"),
                         headers);
    }
    const std::string spec = structured::tool_calls_spec(constraint->call_schema, constraint->call_prefix,
                                                         constraint->call_suffix, constraint->separator,
                                                         constraint->min_calls, constraint->max_calls)
                                 .dump();
    if (const Status valid = structured::validate_spec(spec); !valid.ok()) {
      return reply_error(*ex, ApiError::bad_request("'tools' cannot be enforced for this tool_choice: " + valid.message(),
                                                    "tools"),
                         headers);
    }
    req.sampling.set_guided(spec);
  }
  const auto names = served_models(directory_, options_.served_model_name);
  if (names.empty()) return reply_error(*ex, ApiError::unavailable("no worker that can decode is registered"), headers);
  if (req.model.empty()) {
    r.response.model = names.front();
  } else if (std::find(names.begin(), names.end(), req.model) == names.end()) {
    return reply_error(*ex, ApiError::not_found("The model `" + req.model + "` does not exist.", "model"), headers);
  } else {
    r.response.model = req.model;
  }
  r.response.id = std::string(chat ? "chatcmpl-" : "cmpl-") + r.id;
  r.response.created = std::time(nullptr);
  r.response.chat = chat;
  r.response.return_token_ids = req.return_token_ids;
  r.response.continuous_usage = req.continuous_usage;
  r.exchange = ex;
  r.arrival = arrival;
  if (!req.batch.empty()) return start_batch(std::move(r), headers);

  std::vector<int32_t> prompt;
  bool think_open = false;
  if (auto error = tokenize(req, &prompt, &think_open)) return reply_error(*ex, *error, headers);
  if (auto error = launch(r, std::move(prompt))) return reply_error(*ex, *error, headers);
  const ToolParserKind tool_parser = req.tools.active() ? options_.tool_parser : ToolParserKind::kNone;
  if (chat && (options_.reasoning != ReasoningFormat::kNone || tool_parser != ToolParserKind::kNone)) {
    const int max_calls = req.tools.parallel_tool_calls ? -1 : 1;
    for (int i = 0; i < req.sampling.n(); ++i) r.parsers.emplace_back(options_.reasoning, think_open, tool_parser, max_calls);
    if (options_.reasoning != ReasoningFormat::kNone) {
      for (auto& c : r.choices) c.reasoning.emplace();
    }
  }
  if (req.stream) {
    ex->start_stream(200, "text/event-stream", headers);
    if (chat) {
      for (int i = 0; i < req.sampling.n(); ++i) {
        ex->write(stream_chunk_event(r.response, i, assistant_role_delta(), nullptr, nullptr, nullptr, r.usage));
      }
    }
  }
  const std::string id = r.id;
  active_.emplace(id, std::move(r));
  ex->on_client_gone([this, id] {
    auto it = active_.find(id);
    if (it == active_.end()) return;
    spdlog::info("event=client_disconnected request_id={}", id);
    metrics_.add("tandem_client_disconnects_total", "");
    finish(it->second, /*abort_worker=*/true);
  });
}

// A completions request with a list of prompts: each prompt is sent as a request of its own (routed,
// timed out, rerouted and aborted like any other), sharing the client's exchange; their choices are
// merged in vLLM's order (batch_choice_index) and the response ends when the last part completes.
// Every prompt is tokenized before any is sent; a part that cannot be sent (no worker, or a prompt
// over the context of the worker it was routed to) aborts the ones sent before it.
void RequestLifecycle::start_batch(Request base, const HttpHeaders& headers) {
  HttpExchange& ex = *base.exchange;
  const std::vector<PromptInput> inputs = std::move(base.req.batch);
  base.req.batch.clear();
  std::vector<std::vector<int32_t>> prompts(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    GenerationRequest one = base.req;
    one.prompt_text = inputs[i].text;
    one.prompt_ids = inputs[i].ids;
    if (auto error = tokenize(one, &prompts[i], nullptr)) {
      return reply_error(ex, ApiError::bad_request("prompt[" + std::to_string(i) + "]: " + error->message, "prompt"),
                         headers);
    }
  }
  auto batch = std::make_shared<Batch>();
  batch->usage.resize(inputs.size());
  batch->choices.resize(inputs.size() * base.req.sampling.n());
  batch->remaining = static_cast<int>(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    Request part;
    part.id = i == 0 ? base.id : new_request_id(&base.x_request_id);
    part.x_request_id = base.x_request_id;
    part.req = base.req;
    part.req.prompt_text = inputs[i].text;
    part.req.prompt_ids = inputs[i].ids;
    part.response = base.response;
    part.exchange = base.exchange;
    part.arrival = base.arrival;
    part.batch = batch;
    part.batch_prompt = static_cast<int>(i);
    if (auto error = launch(part, std::move(prompts[i]))) {
      for (const auto& sent : batch->parts) finish(active_.at(sent), /*abort_worker=*/true);
      return reply_error(ex, *error, headers);
    }
    batch->usage[i] = part.usage;
    batch->parts.push_back(part.id);
    active_.emplace(part.id, std::move(part));
  }
  if (base.req.stream) ex.start_stream(200, "text/event-stream", headers);
  ex.on_client_gone([this, batch] {
    bool any = false;
    for (const auto& id : batch->parts) {
      auto it = active_.find(id);
      if (it == active_.end()) continue;
      if (!any) spdlog::info("event=client_disconnected request_id={}", id);
      any = true;
      finish(it->second, /*abort_worker=*/true);
    }
    if (any) metrics_.add("tandem_client_disconnects_total", "");
  });
}

// Routes `r` with `prompt` among the workers serving its model and sends it to its decode worker.
// On success `r` is in flight (assigned to that worker), not yet in active_.
std::optional<ApiError> RequestLifecycle::launch(Request& r, std::vector<int32_t> prompt) {
  GenerationRequest& req = r.req;
  const RoutingPool pool = directory_.pool(r.response.model, prompt, /*excluded=*/0);
  const int prompt_len = static_cast<int>(prompt.size());
  const bool disaggregable = req.sampling.n() == 1 && (!req.max_tokens_given || req.sampling.max_tokens() > 1);
  RouteDraw draw = next_draw();
  draw.prefix_key = prefix_key(prompt);
  Decision d = route(pool.candidates, prompt_len, pool.prefill_queue, disaggregable, router_, draw);
  if (d.remote && !pool.remote_prefill_up) {
    d.remote = false;
    d.prefill = -1;
    d.reason = "prefill_queue_unavailable";
  }
  if (d.decode < 0) return ApiError::unavailable("no worker that can decode is registered");
  const WorkerKey decoder = pool.keys[d.decode];
  const WorkerKey prefill = d.remote ? pool.keys[d.prefill] : 0;
  const rpc::pb::Register& decoder_info = *directory_.info(decoder);
  if (auto error = fit_to_model(decoder_info, prompt, &req)) return error;
  const std::string decoder_id = decoder_info.worker_id();

  spdlog::info("event=route request_id={} decision={} reason={} prompt_tokens={} uncached_tokens={} decode_worker={}{}{} "
               "prefill_queue={} max_local_prefill={} max_prefill_queue={}",
               r.id, d.remote ? "remote" : "local", d.reason, prompt_len, d.uncached_tokens, decoder_id,
               d.remote ? " prefill_worker=" : "", d.remote ? directory_.info(prefill)->worker_id() : "",
               pool.prefill_queue, router_.max_local_prefill, router_.max_prefill_queue);
  metrics_.add("tandem_router_decisions_total", labels({{"decision", d.remote ? "remote" : "local"}, {"reason", d.reason}}));

  rpc::pb::Envelope env;
  auto* g = env.mutable_generate();
  g->set_request_id(r.id);
  g->mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
  *g->mutable_sampling() = req.sampling;
  if (d.remote) {
    directory_.address_remote_prefill(prefill, g);
    g->set_remote_prefill_timeout_ms(options_.remote_prefill_timeout_ms);
  }
  if (!directory_.send(decoder, env)) return ApiError::unavailable("decode worker " + decoder_id + " is gone");
  directory_.note_prompt(decoder, prompt);
  directory_.assign(decoder, r.id);
  directory_.note_routed(decoder, r.id, prompt);
  Leg leg;
  leg.id = r.id;
  leg.worker = decoder;
  if (d.remote) {
    r.remote = true;
    leg.prefill_slot = directory_.hold_prefill(prefill);
  }
  r.legs = {std::move(leg)};
  r.generate = std::make_shared<rpc::pb::Envelope>(std::move(env));
  r.usage.prompt_tokens = prompt_len;
  r.choices.resize(req.sampling.n());
  r.text_bytes.assign(req.sampling.n(), 0);
  r.last_activity = Clock::now();
  metrics_.add("vllm:prompt_tokens_total", "", prompt_len);
  return std::nullopt;
}

void RequestLifecycle::on_output(WorkerKey worker, const rpc::pb::Output& out) {
  auto [found, leg] = find_leg(out.request_id());
  if (found == nullptr || leg->worker != worker) return;  // ended, or from a worker it has left
  Request& r = *found;
  // A leg of one choice speaks of it as its index 0.
  const int choice = leg->choice >= 0 ? (out.index() == 0 ? leg->choice : -1) : out.index();
  if (choice < 0 || choice >= static_cast<int>(r.choices.size())) return;
  const auto now = Clock::now();
  r.last_activity = now;
  if (out.prefill().present()) {
    const auto& p = out.prefill();
    if (p.remote()) {
      metrics_.add("tandem_remote_prefills_total", "");
      metrics_.add("tandem_kv_transfer_bytes_total", "", static_cast<double>(p.kv_bytes()));
      metrics_.histogram("tandem_kv_transfer_seconds", "", latency_buckets()).observe(p.transfer_seconds());
    } else {
      metrics_.add("tandem_local_prefills_total", "");
    }
    if (p.fell_back()) {
      metrics_.add("tandem_remote_prefill_fallbacks_total", "");
      spdlog::warn("event=prefill_fell_back request_id={} reason=\"{}\"", r.id, p.fallback_reason());
    }
  }
  release_prefill(*leg);
  if (out.finish_reason() == rpc::pb::FINISH_ERROR) {
    auto code = static_cast<StatusCode>(out.error_code());
    // Refused (draining, its device failed) or failed (a device fault) before producing anything:
    // another worker can serve it, and the client never sees the first attempt.
    if ((code == StatusCode::kUnavailable || code == StatusCode::kInternal) &&
        (reroute(r, *leg, "worker_error") || migrate(r, *leg, "worker_error"))) {
      return;
    }
    return fail(r.id, ApiError::from_code(code, out.error_message().empty() ? "the worker failed" : out.error_message()),
                /*abort_worker=*/true);
  }
  // The frontend's own aborts forget the request first: an abort that reaches a live request is the
  // worker's (its drain ran past its deadline). The stream moves on; the client never sees it.
  if (out.finish_reason() == rpc::pb::FINISH_ABORT && migrate(r, *leg, "worker_aborted")) return;
  r.text_bytes[choice] += static_cast<int64_t>(out.text().size());
  const int num_new = out.token_ids_size();
  if (num_new > 0) {
    if (!r.seen_first) {
      r.seen_first = true;
      r.first_token = now;
      // Past the point of re-routing; kept while the stream may still migrate.
      if (options_.migration_limit <= 0) r.generate.reset();
      metrics_.histogram("vllm:time_to_first_token_seconds", "", latency_buckets()).observe(seconds_between(r.arrival, now));
    } else {
      metrics_.histogram("vllm:inter_token_latency_seconds", "", latency_buckets())
          .observe(seconds_between(r.last_token, now) / num_new);
    }
    r.last_token = now;
    r.usage.completion_tokens += num_new;
    metrics_.add("vllm:generation_tokens_total", "", num_new);
  }
  // A migrated request's prompt holds its earlier output too: the cached part counts up to the prompt.
  r.usage.cached_prompt_tokens =
      std::max(r.usage.cached_prompt_tokens, std::min(out.num_cached_prompt_tokens(), r.usage.prompt_tokens));
  if (r.batch) r.batch->usage[r.batch_prompt] = r.usage;
  ChoiceState& c = r.choices[choice];
  if (c.finished) return;
  std::vector<json> deltas;  // a stream's deltas of this output (chat with parsers: one or more)
  bool has_text = !out.text().empty();
  if (!r.parsers.empty()) {
    ChatPiece piece = r.parsers[choice].feed(out.text(), out.finished());
    c.text += piece.content;
    if (c.reasoning) *c.reasoning += piece.reasoning;
    has_text = !piece.reasoning.empty() || !piece.content.empty() || !piece.calls.empty();
    if (r.req.stream) deltas = chat_piece_deltas(piece, c.reasoning.has_value(), num_new);
    apply_tool_call_deltas(piece.calls, &c.tool_calls);
  } else {
    c.text += out.text();
    if (r.req.stream) deltas.push_back(stream_delta(r.req.chat, out.text(), num_new));
  }
  c.tokens.insert(c.tokens.end(), out.token_ids().begin(), out.token_ids().end());
  json lp;
  const bool has_lp = r.req.top_logprobs >= 0 && out.logprobs_size() > 0;
  if (has_lp) {
    lp = new_logprobs(r.req.chat, out, c, /*accumulate=*/!r.req.stream, [this](int32_t id) { return token_text(id); });
  }
  const char* reason = nullptr;
  if (out.finished()) {
    c.finished = true;
    c.finish_reason = r.req.chat ? chat_finish_reason(c.tool_calls, finish_reason_text(out.finish_reason()))
                                 : finish_reason_text(out.finish_reason());
    c.stop_reason = out.stop_reason();
    reason = c.finish_reason.c_str();
    ++r.num_finished;
    if (leg->choice >= 0) drop_leg(r, leg->id);  // a leg of one choice is done with it
  }
  if (r.req.stream && (num_new > 0 || has_text || out.finished())) {
    const std::vector<int32_t> ids(out.token_ids().begin(), out.token_ids().end());
    const int index = r.batch ? batch_choice_index(r.batch_prompt, r.req.sampling.n(), choice) : choice;
    const TokenUsage usage = r.batch ? sum_usage(r.batch->usage) : r.usage;
    // Logprobs and token ids ride on the first delta, the finish reason on the last.
    for (size_t k = 0; k < deltas.size(); ++k) {
      const bool first = k == 0, last = k + 1 == deltas.size();
      r.exchange->write(stream_chunk_event(r.response, index, deltas[k], first && has_lp ? &lp : nullptr,
                                           last ? reason : nullptr, first ? &ids : nullptr, usage));
    }
  }
  if (r.num_finished == static_cast<int>(r.choices.size())) complete(r);
}

void RequestLifecycle::on_worker_lost(WorkerKey worker, const std::string& name, const Status& reason,
                                      const std::vector<std::string>& requests) {
  for (const auto& leg_id : requests) {
    auto [r, leg] = find_leg(leg_id);
    if (r == nullptr || leg->worker != worker) continue;
    if (reroute(*r, *leg, "worker_lost") || migrate(*r, *leg, "worker_lost")) continue;
    // Its other legs (a split stream's choices on other workers) are aborted; this one is gone.
    drop_leg(*r, leg_id);
    fail(r->id, ApiError::unavailable("decode worker " + name + " lost: " + reason.message()), /*abort_worker=*/true);
  }
  // Remote prefills routed to it no longer count toward the queue; their decode workers fall back.
  for (auto& [id, r] : active_) {
    for (Leg& leg : r.legs) {
      if (leg.prefill_slot == worker) release_prefill(leg);
    }
  }
}

void RequestLifecycle::expire_stalled(Clock::time_point now) {
  std::vector<std::string> stalled, late;
  const auto deadline = std::chrono::milliseconds(options_.request_deadline_ms);
  for (auto& [id, r] : active_) {
    if (options_.request_deadline_ms > 0 && now - r.arrival > deadline) {
      late.push_back(id);
    } else if (now - r.last_activity > std::chrono::milliseconds(options_.request_timeout_ms)) {
      stalled.push_back(id);
    }
  }
  for (const auto& id : stalled) {
    fail(id, ApiError::timeout("no output from the worker for " + std::to_string(options_.request_timeout_ms) + " ms"),
         /*abort_worker=*/true);
  }
  for (const auto& id : late) {
    fail(id, ApiError::timeout("the request ran past its deadline of " + std::to_string(options_.request_deadline_ms) +
                               " ms (--request-timeout-s)"),
         /*abort_worker=*/true);
  }
}

std::pair<RequestLifecycle::Request*, RequestLifecycle::Leg*> RequestLifecycle::find_leg(const std::string& leg_id) {
  auto owner = split_legs_.find(leg_id);
  auto it = active_.find(owner == split_legs_.end() ? leg_id : owner->second);
  if (it == active_.end()) return {nullptr, nullptr};
  for (Leg& leg : it->second.legs) {
    if (leg.id == leg_id) return {&it->second, &leg};
  }
  return {nullptr, nullptr};  // a leg that split or finished: what its old worker still sends is stale
}

// Sends a request that its worker refused or lost before its first token to the worker the router
// picks among the others, with a local prefill; once per request. False (nothing changed) when the
// request already produced output, was re-routed before, or no other worker can take it.
bool RequestLifecycle::reroute(Request& r, Leg& leg, const char* why) {
  if (r.rerouted || r.usage.completion_tokens > 0 || !r.generate || leg.id != r.id) return false;
  const WorkerKey from = leg.worker;
  rpc::pb::Generate* g = r.generate->mutable_generate();
  const std::span<const int32_t> prompt(g->prompt_token_ids().data(), static_cast<size_t>(g->prompt_token_ids_size()));
  const RoutingPool pool = directory_.pool(r.response.model, prompt, from);
  const Decision d = route(pool.candidates, static_cast<int>(prompt.size()), 0, /*disaggregable=*/false, router_, next_draw());
  if (d.decode < 0) return false;
  const WorkerKey target = pool.keys[d.decode];
  g->clear_remote_prefill_address();
  g->set_remote_prefill_queue(false);
  if (!directory_.send(target, *r.generate)) return false;
  release_prefill(leg);
  directory_.unassign(from, r.id);
  directory_.assign(target, r.id);
  directory_.note_routed(target, r.id, prompt);
  leg.worker = target;
  r.remote = false;
  r.rerouted = true;
  const rpc::pb::Register* from_info = directory_.info(from);
  spdlog::warn("event=request_rerouted request_id={} from={} to={} reason={}", r.id,
               from_info ? from_info->worker_id() : "", directory_.info(target)->worker_id(), why);
  metrics_.add("tandem_requests_rerouted_total", labels({{"reason", why}}));
  return true;
}

// Moves the choices of a leg whose decode worker was lost, failed or gave it up after the stream's
// first tokens to other workers (docs/routing.md, migration): for each unfinished choice, the prompt
// plus the tokens the client already has of it, which the new worker continues as output
// (Generate.num_resumed_tokens), so the stream goes on with no error, no repeated and no lost token.
// A request of one choice moves as it was; of several, each choice goes on alone (n = 1, its
// Generate.choice_index keying its seeded draws), routed on its own, as a leg of its own. Up to
// --migration-limit times per request (a move of several choices at once counts once). False, with
// r.legs unchanged, when it may not move or another worker cannot take every choice: the legs sent
// before the one that could not be are aborted.
bool RequestLifecycle::migrate(Request& r, Leg& leg, const char* why) {
  // Before the first token reroute() is the rule (once); migration continues a stream under way.
  if (r.migrations >= options_.migration_limit || !r.generate || r.usage.completion_tokens == 0) return false;
  const WorkerKey from = leg.worker;
  std::vector<int> moving;  // the leg's unfinished choices
  for (int i = 0; i < static_cast<int>(r.choices.size()); ++i) {
    if ((leg.choice < 0 || leg.choice == i) && !r.choices[i].finished) moving.push_back(i);
  }
  if (moving.empty()) return false;
  const bool alone = r.choices.size() > 1;
  std::vector<Leg> moved;
  std::vector<bool> remote;
  auto undo = [&] {
    for (const Leg& m : moved) {
      rpc::pb::Envelope abort;
      abort.mutable_abort()->set_request_id(m.id);
      directory_.send(m.worker, abort);
      directory_.unassign(m.worker, m.id);
      if (m.prefill_slot != 0) directory_.release_prefill(m.prefill_slot);
    }
  };
  for (const int choice : moving) {
    const std::vector<int32_t>& done = r.choices[choice].tokens;
    rpc::pb::Envelope env = *r.generate;
    rpc::pb::Generate* g = env.mutable_generate();
    rpc::pb::SamplingParams* sampling = g->mutable_sampling();
    const int resumed = static_cast<int>(done.size());
    if (sampling->max_tokens() - resumed < 1) {
      undo();
      return false;
    }
    Leg next;
    next.id = alone ? split_leg_id(r.id, choice) : r.id;
    next.choice = alone ? choice : -1;
    g->set_request_id(next.id);
    if (alone) {
      sampling->set_n(1);
      g->set_choice_index(choice);
    }
    sampling->set_max_tokens(sampling->max_tokens() - resumed);
    sampling->set_min_tokens(std::max(0, sampling->min_tokens() - resumed));
    g->mutable_prompt_token_ids()->Add(done.begin(), done.end());
    g->set_num_resumed_tokens(resumed);
    g->set_resumed_text_bytes(r.text_bytes[choice]);
    g->clear_remote_prefill_address();
    g->set_remote_prefill_queue(false);
    const std::span<const int32_t> prompt(g->prompt_token_ids().data(), static_cast<size_t>(g->prompt_token_ids_size()));
    const RoutingPool pool = directory_.pool(r.response.model, prompt, from);
    // Its prefill may be remote again: the prompt and output so far are prefilled wherever the rule says.
    Decision d = route(pool.candidates, static_cast<int>(prompt.size()), pool.prefill_queue, sampling->max_tokens() > 1,
                       router_, next_draw());
    if (d.decode < 0) {
      undo();
      return false;
    }
    if (d.remote && !pool.remote_prefill_up) d.remote = false;
    next.worker = pool.keys[d.decode];
    const WorkerKey prefill = d.remote ? pool.keys[d.prefill] : 0;
    if (d.remote) {
      directory_.address_remote_prefill(prefill, g);
      g->set_remote_prefill_timeout_ms(options_.remote_prefill_timeout_ms);
    }
    if (!directory_.send(next.worker, env)) {
      undo();
      return false;
    }
    // Counted at once, so that the next choice's route sees this one as pending there.
    directory_.assign(next.worker, next.id);
    directory_.note_routed(next.worker, next.id, prompt);
    if (d.remote) next.prefill_slot = directory_.hold_prefill(prefill);
    moved.push_back(std::move(next));
    remote.push_back(d.remote);
  }
  // Every choice went: the old leg gives way to the new ones.
  const std::string from_id = leg.id;  // `leg` is erased below
  drop_leg(r, from_id);
  ++r.migrations;
  r.last_activity = Clock::now();
  const rpc::pb::Register* from_info = directory_.info(from);
  for (size_t i = 0; i < moved.size(); ++i) {
    const int choice = moving[i];
    spdlog::warn("event=request_migrated request_id={} choice={} from={} to={} reason={} resumed_tokens={} migrations={} "
                 "remote_prefill={}",
                 r.id, choice, from_info ? from_info->worker_id() : "", directory_.info(moved[i].worker)->worker_id(), why,
                 r.choices[choice].tokens.size(), r.migrations, remote[i]);
    r.remote = r.remote || remote[i];
    if (moved[i].id != r.id) split_legs_[moved[i].id] = r.id;
    r.legs.push_back(std::move(moved[i]));
  }
  metrics_.add("tandem_requests_migrated_total", labels({{"reason", why}}));
  return true;
}

void RequestLifecycle::drop_leg(Request& r, const std::string& leg_id) {
  auto it = std::find_if(r.legs.begin(), r.legs.end(), [&](const Leg& l) { return l.id == leg_id; });
  if (it == r.legs.end()) return;
  release_prefill(*it);
  directory_.unassign(it->worker, it->id);
  if (it->id != r.id) split_legs_.erase(it->id);
  r.legs.erase(it);
}

void RequestLifecycle::release_prefill(Leg& leg) {
  if (leg.prefill_slot == 0) return;
  directory_.release_prefill(leg.prefill_slot);
  leg.prefill_slot = 0;
}

void RequestLifecycle::complete(Request& r) {
  const auto now = Clock::now();
  metrics_.histogram("vllm:e2e_request_latency_seconds", "", latency_buckets()).observe(seconds_between(r.arrival, now));
  const std::string reason = r.choices.empty() ? "" : r.choices[0].finish_reason;
  metrics_.add("vllm:request_success_total", labels({{"finished_reason", reason}}));
  // A part of a batch answers the client only as the last of its parts.
  const std::vector<ChoiceState>* choices = &r.choices;
  TokenUsage usage = r.usage;
  bool respond = true;
  if (r.batch) {
    Batch& b = *r.batch;
    const int n = r.req.sampling.n();
    for (int i = 0; i < n; ++i) b.choices[batch_choice_index(r.batch_prompt, n, i)] = r.choices[i];
    b.usage[r.batch_prompt] = r.usage;
    respond = --b.remaining == 0;
    choices = &b.choices;
    usage = sum_usage(b.usage);
  }
  if (respond && r.req.stream) {
    if (r.req.include_usage) r.exchange->write(sse_event(usage_chunk(r.response, usage)));
    r.exchange->write(kSseDone);
    r.exchange->end();
  } else if (respond) {
    const json body = response_body(r.response, *choices, usage, /*with_logprobs=*/r.req.top_logprobs >= 0);
    r.exchange->respond(200, "application/json", body.dump(), {{"X-Request-Id", r.x_request_id}});
  }
  spdlog::info("event=request_done request_id={} prompt_tokens={} output_tokens={} remote_prefill={} ttft_ms={:.1f} "
               "e2e_ms={:.1f}",
               r.id, r.usage.prompt_tokens, r.usage.completion_tokens, r.remote,
               r.seen_first ? seconds_between(r.arrival, r.first_token) * 1e3 : -1.0,
               seconds_between(r.arrival, now) * 1e3);
  finish(r, /*abort_worker=*/false);
}

// Ends a request with an error: an error event on a stream, an error body otherwise.
void RequestLifecycle::fail(const std::string& id, const ApiError& error, bool abort_worker) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Request& r = it->second;
  spdlog::warn("event=request_failed request_id={} status={} reason=\"{}\"", id, error.status, error.message);
  metrics_.add("tandem_requests_failed_total", labels({{"status", std::to_string(error.status)}}));
  const std::shared_ptr<Batch> batch = r.batch;
  if (batch && batch->failed) {
    // The client already has its error (a part failed before and the others were aborted).
  } else if (r.req.stream) {
    r.exchange->write(sse_event(error_body(error)));
    r.exchange->write(kSseDone);
    r.exchange->end();
  } else {
    r.exchange->respond(error.status, "application/json", error_body(error), {{"X-Request-Id", r.x_request_id}});
  }
  finish(r, abort_worker);
  if (batch && !batch->failed) {
    // One answer per client: the batch's other parts stop with it.
    batch->failed = true;
    for (const auto& part : batch->parts) {
      auto sibling = active_.find(part);
      if (sibling != active_.end()) finish(sibling->second, /*abort_worker=*/true);
    }
  }
}

// Forgets a request; tells its workers to stop it when it may still be running there.
void RequestLifecycle::finish(Request& r, bool abort_worker) {
  for (Leg& leg : r.legs) {
    release_prefill(leg);
    directory_.unassign(leg.worker, leg.id);
    if (leg.id != r.id) split_legs_.erase(leg.id);
    if (abort_worker) {
      rpc::pb::Envelope env;
      env.mutable_abort()->set_request_id(leg.id);
      directory_.send(leg.worker, env);
    }
  }
  const std::string id = r.id;  // `r` lives in the map entry being erased
  active_.erase(id);
}

RouteDraw RequestLifecycle::next_draw() {
  RouteDraw draw;
  draw.uniform = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  draw.turn = route_turn_++;
  return draw;
}

std::string RequestLifecycle::token_text(int32_t id) const {
  return codec_ ? codec_->token_text(id) : "token_id:" + std::to_string(id);
}

}  // namespace tandem::frontend
