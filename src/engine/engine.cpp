// The engine loop: schedule -> prepare the batch -> forward (without the lock) -> complete the step,
// sample, apply stop rules -> deliver outputs (without the lock). See engine.h for the contract.
#include "engine/engine.h"

#include <omp.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/random.h"
#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/step_masks.h"
#include "engine/stop_checker.h"

namespace tandem::engine {
namespace {

struct RequestState;

// One choice of one request: the scheduler's Sequence plus what sampling and stop rules need.
struct Choice : Sequence {
  RequestState* request = nullptr;
  int index = 0;
  std::unique_ptr<StopChecker> stop;
  std::unique_ptr<TokenConstraint> constraint;  // SamplingParams::guided's state for this choice, or null
};

struct RequestState {
  Request request;
  OutputCallback callback;
  uint64_t seed = 0;
  int n = 1;
  std::vector<std::unique_ptr<Choice>> choices;  // [0] first; the others appear at the fork
  std::vector<bool> done;                        // [n] the choice's final output was emitted
  int num_done = 0;
  bool forked = false;
  std::vector<int32_t> reserved_blocks;  // kDecodeFromKv: taken from reserve_kv at submit
  std::shared_ptr<const TokenConstraintFactory> constraint;  // compiled SamplingParams::guided, or null
  int reserved_cached_tokens = 0;
};

struct PendingOutput {
  std::shared_ptr<RequestState> request;  // keeps the callback alive until delivered
  RequestOutput output;
};

// Blocks held outside the scheduler: a reservation, or the prompt KV of a finished prefill-only request.
struct HeldBlocks {
  std::vector<int32_t> block_ids;
  int num_tokens = 0;
  int num_cached_tokens = 0;
  bool reservation = false;
};

uint64_t model_salt(const model::ModelConfig& c) {
  std::string key = c.architecture_name + "|" + std::to_string(c.vocab_size) + "|" + std::to_string(c.hidden_size) + "|" +
                    std::to_string(c.num_layers) + "|" + std::to_string(c.num_kv_heads) + "|" + std::to_string(c.head_dim);
  return fnv1a64(key);
}

// Where a step's tokens are drawn (EngineImpl::choose_step_draw).
enum class StepDraw { kArgmaxOnDevice, kSampleOnDevice, kHostSampler };

class EngineImpl final : public Engine {
 public:
  EngineImpl(std::unique_ptr<backend::Backend> backend, const EngineOptions& options,
             std::shared_ptr<TextStreamFactory> text)
      : backend_((check_options(options, *backend), std::move(backend))),
        text_(std::move(text)),
        config_(backend_->config()),
        kv_(backend_->kv_cache_spec()),
        max_model_len_(compute_max_model_len(options)),
        blocks_(kv_.num_blocks, kv_.block_size, options.enable_prefix_caching, model_salt(config_)),
        scheduler_({options.max_batch_tokens, options.max_seqs}, &blocks_),
        max_seqs_(options.max_seqs),
        seed_source_(std::random_device{}()),
        constraints_(options.constraints),
        runner_(backend_.get()),
        samplers_(std::max(1, omp_get_max_threads())),
        step_masks_(config_.vocab_size, config_.eos_token_ids) {
    samplers_[0] = std::make_unique<Sampler>(config_.vocab_size, config_.eos_token_ids);
    device_sampling_ = backend_->samples_on_device();
    spdlog::info("engine started device={} kv_blocks={} block_size={} max_model_len={} max_batch_tokens={} max_seqs={} "
                 "prefix_caching={} device_sampling={}",
                 backend_->device_name(), kv_.num_blocks, kv_.block_size, max_model_len_, options.max_batch_tokens,
                 options.max_seqs, options.enable_prefix_caching, device_sampling_);
    // OpenMP thread counts are per thread: the loop thread (which runs the backend's forward and the
    // sampling) inherits the creating thread's, so BackendOptions::num_threads, applied on the thread
    // that built the backend, still holds.
    const int omp_threads = omp_get_max_threads();
    thread_ = std::thread([this, omp_threads] {
      omp_set_num_threads(omp_threads);
      // Named for `top -H` and for per-thread CPU accounting (bench/results/2026-12-02-cpu-serve-overhead).
      pthread_setname_np(pthread_self(), "tandem-engine");
      loop();
    });
  }

  ~EngineImpl() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
    // Every accepted request ends: the ones still live are aborted.
    std::vector<PendingOutput> outs;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& state : intake_) admit(state, &outs);
      intake_.clear();
      std::vector<std::shared_ptr<RequestState>> live;
      for (auto& [id, state] : live_) live.push_back(state);
      for (auto& state : live) end_request(state, FinishReason::kAbort, Status::Ok(), &outs);
    }
    deliver(outs);
  }

  Status submit(Request request, OutputCallback on_output) override {
    auto state = std::make_shared<RequestState>();
    TANDEM_RETURN_IF_ERROR(validate(request));
    if (!request.sampling.guided.empty()) {  // compiled here, on the caller's thread, not the loop's
      if (!constraints_) return Status::InvalidArgument("structured output needs a worker with a tokenizer");
      auto compiled = constraints_->compile(request.sampling.guided);
      if (!compiled.ok()) return compiled.status();
      state->constraint = *compiled;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return Status::Unavailable("the engine is shutting down");
      if (!device_failure_.ok()) return Status::Unavailable("the engine's device failed: " + device_failure_.message());
      if (live_.count(request.request_id) != 0) {
        return Status::InvalidArgument("request_id '" + request.request_id + "' is already in use");
      }
      auto held = held_.find(request.request_id);
      if (request.prefill_mode == PrefillMode::kDecodeFromKv) {
        if (held == held_.end() || !held->second.reservation) {
          return Status::NotFound("no KV reservation for request_id '" + request.request_id + "' (call reserve_kv first)");
        }
        if (held->second.num_tokens != static_cast<int>(request.prompt_token_ids.size())) {
          return Status::InvalidArgument("the prompt has " + std::to_string(request.prompt_token_ids.size()) +
                                         " tokens; the reservation was made for " + std::to_string(held->second.num_tokens));
        }
        state->reserved_blocks = std::move(held->second.block_ids);
        state->reserved_cached_tokens = held->second.num_cached_tokens;
        held_.erase(held);
      } else if (held != held_.end()) {
        if (!held->second.reservation) {
          return Status::InvalidArgument("request_id '" + request.request_id + "' still holds prefill KV (release_blocks first)");
        }
        // kLocal after a reservation: the remote prefill was given up; prefill here instead.
        blocks_.free(held->second.block_ids);
        held_.erase(held);
      }
      state->seed = request.sampling.seed ? *request.sampling.seed : seed_source_.next();
      state->n = request.sampling.n;
      state->done.assign(state->n, false);
      state->callback = std::move(on_output);
      state->request = std::move(request);
      live_[state->request.request_id] = state;
      intake_.push_back(std::move(state));
      blocked_ = false;
    }
    cv_.notify_all();
    return Status::Ok();
  }

  void abort(const std::string& request_id) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      release_held(request_id);
      if (live_.count(request_id) == 0) return;
      aborts_.push_back(request_id);
    }
    cv_.notify_all();
  }

  StatusOr<KvReservation> reserve_kv(const std::string& request_id, const std::vector<int32_t>& prompt_token_ids) override {
    TANDEM_RETURN_IF_ERROR(validate_prompt(prompt_token_ids));
    std::lock_guard<std::mutex> lock(mu_);
    if (!device_failure_.ok()) return Status::Unavailable("the engine's device failed: " + device_failure_.message());
    if (live_.count(request_id) != 0 || held_.count(request_id) != 0) {
      return Status::InvalidArgument("request_id '" + request_id + "' already holds KV or is running");
    }
    Sequence probe;
    probe.token_ids = prompt_token_ids;
    probe.num_prompt_tokens = probe.num_tokens();
    std::vector<int32_t> cached;
    if (blocks_.prefix_caching()) {
      blocks_.update_block_hashes(probe);
      blocks_.find_cached_prefix(probe, probe.num_tokens() / kv_.block_size, &cached);
    }
    HeldBlocks held;
    if (!blocks_.allocate_table(held.block_ids, cached, probe.num_tokens())) {
      return Status::ResourceExhausted("not enough free KV blocks for a prompt of " + std::to_string(probe.num_tokens()) +
                                       " tokens now");
    }
    const int num_cached_tokens = static_cast<int>(cached.size()) * kv_.block_size;
    blocks_.record_prefix_lookup(probe.num_tokens(), num_cached_tokens);
    held.num_tokens = probe.num_tokens();
    held.num_cached_tokens = num_cached_tokens;
    held.reservation = true;
    KvReservation reservation{held.block_ids, num_cached_tokens};
    held_.emplace(request_id, std::move(held));
    return reservation;
  }

  void release_blocks(const std::string& request_id) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!release_held(request_id)) return;
    }
    cv_.notify_all();
  }

  int num_cached_prefix_tokens(const std::vector<int32_t>& prompt_token_ids) const override {
    if (prompt_token_ids.empty()) return 0;
    Sequence probe;
    probe.token_ids = prompt_token_ids;
    probe.num_prompt_tokens = probe.num_tokens();
    std::vector<int32_t> cached;
    std::lock_guard<std::mutex> lock(mu_);
    if (!blocks_.prefix_caching()) return 0;
    blocks_.update_block_hashes(probe);
    blocks_.find_cached_prefix(probe, probe.num_tokens() / kv_.block_size, &cached);
    return static_cast<int>(cached.size()) * kv_.block_size;
  }

  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s;
    const BlockManagerStats b = blocks_.stats();
    s.num_running = scheduler_.num_running();
    s.num_waiting = scheduler_.num_waiting() + static_cast<int>(intake_.size());
    s.num_kv_blocks_total = b.num_blocks;
    s.num_kv_blocks_used = b.num_used;
    s.num_kv_blocks_cached = b.num_cached;
    s.prefix_cache_queries = b.prefix_queries;
    s.prefix_cache_hits = b.prefix_hits;
    s.num_preemptions = scheduler_.num_preemptions();
    s.prompt_tokens_total = prompt_tokens_total_;
    s.generation_tokens_total = generation_tokens_total_;
    s.max_model_len = max_model_len_;
    s.num_steps = num_steps_.load(std::memory_order_relaxed);
    s.forward_seconds = 1e-9 * static_cast<double>(forward_ns_.load(std::memory_order_relaxed));
    s.outside_forward_seconds = 1e-9 * static_cast<double>(outside_forward_ns_.load(std::memory_order_relaxed));
    s.num_decode_steps = num_decode_steps_.load(std::memory_order_relaxed);
    s.decode_forward_seconds = 1e-9 * static_cast<double>(decode_forward_ns_.load(std::memory_order_relaxed));
    s.decode_outside_forward_seconds = 1e-9 * static_cast<double>(decode_outside_forward_ns_.load(std::memory_order_relaxed));
    return s;
  }

  backend::Backend& backend() override { return *backend_; }

 private:
  // Startup errors a user can act on, before any member that would assert on them is built.
  static void check_options(const EngineOptions& options, const backend::Backend& backend) {
    if (options.max_batch_tokens <= 0) throw Error("--max-batch-tokens must be positive");
    if (options.max_seqs <= 0) throw Error("--max-seqs must be positive");
    if (options.max_model_len < 0) throw Error("--max-model-len must not be negative");
    if (backend.kv_cache_spec().num_blocks <= 0 || backend.kv_cache_spec().block_size <= 0) {
      throw Error("the backend has no KV cache blocks (raise the KV cache size)");
    }
  }

  int compute_max_model_len(const EngineOptions& options) const {
    int len = options.max_model_len > 0 ? options.max_model_len : config_.max_position_embeddings;
    if (len <= 0) len = kv_.num_blocks * kv_.block_size;
    // One sequence alone must always fit in the pool, or preemption could never make progress.
    return std::min(len, kv_.num_blocks * kv_.block_size);
  }

  Status validate_prompt(const std::vector<int32_t>& prompt) const {
    if (prompt.empty()) return Status::InvalidArgument("the prompt must have at least one token");
    for (int32_t id : prompt) {
      if (id < 0 || id >= config_.vocab_size) {
        return Status::InvalidArgument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                       std::to_string(config_.vocab_size) + ")");
      }
    }
    if (static_cast<int>(prompt.size()) >= max_model_len_) {
      return Status::TooLarge("the prompt has " + std::to_string(prompt.size()) + " tokens; this engine takes at most " +
                              std::to_string(max_model_len_ - 1) + " (max_model_len " + std::to_string(max_model_len_) +
                              ", KV pool " + std::to_string(kv_.num_blocks * kv_.block_size) + " tokens)");
    }
    return Status::Ok();
  }

  Status validate(const Request& r) const {
    if (r.request_id.empty()) return Status::InvalidArgument("request_id must not be empty");
    TANDEM_RETURN_IF_ERROR(validate_prompt(r.prompt_token_ids));
    const SamplingParams& p = r.sampling;
    auto bad = [](const std::string& m) { return Status::InvalidArgument(m); };
    if (!std::isfinite(p.temperature) || p.temperature < 0) return bad("temperature must be >= 0");
    if (!(p.top_p > 0 && p.top_p <= 1)) return bad("top_p must be in (0, 1]");
    if (p.top_k < -1) return bad("top_k must be -1, 0 (off) or positive");
    if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("min_p must be in [0, 1]");
    if (!(p.presence_penalty >= -2 && p.presence_penalty <= 2)) return bad("presence_penalty must be in [-2, 2]");
    if (!(p.frequency_penalty >= -2 && p.frequency_penalty <= 2)) return bad("frequency_penalty must be in [-2, 2]");
    if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) return bad("repetition_penalty must be > 0");
    if (p.max_tokens < 1) return bad("max_tokens must be >= 1");
    if (r.num_resumed_tokens < 0 || r.num_resumed_tokens >= static_cast<int>(r.prompt_token_ids.size())) {
      return bad("num_resumed_tokens must be in [0, prompt length)");
    }
    if (r.num_resumed_tokens > 0 && p.n != 1) return bad("a resumed request has n = 1");
    if (r.choice_index < 0) return bad("choice_index must be >= 0");
    if (r.choice_index > 0 && p.n != 1) return bad("a request that carries one choice of several (choice_index) has n = 1");
    if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) return bad("min_tokens must be in [0, max_tokens]");
    if (p.logprobs < -1 || p.logprobs > 20) return bad("logprobs must be in [0, 20]");
    if (p.n < 1 || p.n > max_seqs_) return bad("n must be in [1, max_seqs = " + std::to_string(max_seqs_) + "]");
    for (const auto& [id, bias] : p.logit_bias) {
      if (id < 0 || id >= config_.vocab_size) return bad("logit_bias token id " + std::to_string(id) + " is outside the vocabulary");
      if (!(bias >= -100 && bias <= 100)) return bad("logit_bias values must be in [-100, 100]");
    }
    for (const std::string& s : p.stop) {
      if (s.empty()) return bad("stop strings must not be empty");
    }
    if (!p.stop.empty() && !text_) return bad("stop strings need a detokenizer; this engine has none");
    if (r.prefill_mode != PrefillMode::kLocal && p.n != 1) return bad("n > 1 is not supported with disaggregated prefill");
    if (r.prefill_mode == PrefillMode::kDecodeFromKv && (r.first_token_id < 0 || r.first_token_id >= config_.vocab_size)) {
      return bad("first_token_id must be a token id of the vocabulary");
    }
    return Status::Ok();
  }

  // REQUIRES: mu_ held. True when something was released.
  bool release_held(const std::string& request_id) {
    auto it = held_.find(request_id);
    if (it == held_.end()) return false;
    blocks_.free(it->second.block_ids);
    held_.erase(it);
    blocked_ = false;
    return true;
  }

  std::unique_ptr<Choice> new_choice(RequestState& state, int index) {
    auto c = std::make_unique<Choice>();
    c->seq_id = next_seq_id_++;
    c->request = &state;
    c->index = index;
    c->token_ids = state.request.prompt_token_ids;
    c->num_prompt_tokens = c->num_tokens();
    std::unique_ptr<TextStream> stream;
    if (text_) {
      stream = text_->new_stream(state.request.sampling.skip_special_tokens);
      if (!stream) throw std::runtime_error("new_stream returned null");
    }
    c->stop = std::make_unique<StopChecker>(&state.request.sampling, config_.eos_token_ids, max_model_len_, std::move(stream));
    if (state.constraint) c->constraint = state.constraint->start();
    if (const int resumed = state.request.num_resumed_tokens; resumed > 0) {
      const auto sent = c->prompt().last(static_cast<size_t>(resumed));
      c->stop->resume(sent, state.request.resumed_text_bytes);
      // A migrated constrained stream goes on with its grammar where the client's text is, not from its start.
      if (c->constraint) {
        for (const int32_t token : sent) c->constraint->advance(token);
      }
    }
    return c;
  }

  RequestOutput base_output(const RequestState& state, const Choice* c, int index) const {
    RequestOutput out;
    out.request_id = state.request.request_id;
    out.index = index;
    out.num_prompt_tokens = static_cast<int>(state.request.prompt_token_ids.size());
    if (c != nullptr) {
      out.num_cached_prompt_tokens = c->num_cached_prompt_tokens;
      out.num_output_tokens = c->num_output_tokens();
    }
    return out;
  }

  // REQUIRES: mu_ held. Moves a submitted request into the scheduler.
  void admit(const std::shared_ptr<RequestState>& state_ptr, std::vector<PendingOutput>* outs) {
    RequestState& state = *state_ptr;
    prompt_tokens_total_ += static_cast<int64_t>(state.request.prompt_token_ids.size());
    try {
      state.choices.push_back(new_choice(state, 0));
    } catch (const std::exception& e) {  // the detokenizer is someone else's code: fail the request, not the loop
      if (!state.reserved_blocks.empty()) blocks_.free(state.reserved_blocks);
      end_request(state_ptr, FinishReason::kError, Status::Internal(std::string("detokenizer: ") + e.what()), outs);
      return;
    }
    Choice* c = state.choices[0].get();
    if (state.request.prefill_mode != PrefillMode::kDecodeFromKv) {
      scheduler_.add_waiting(c, state.n);
      return;
    }
    // The prompt's KV is in the reserved blocks; the first token came from the prefill worker.
    c->block_table = std::move(state.reserved_blocks);
    c->num_computed_tokens = c->num_prompt_tokens;
    c->num_cached_prompt_tokens = state.reserved_cached_tokens;
    scheduler_.add_running(c);
    on_token(state_ptr, c, state.request.first_token_id, nullptr, outs);
  }

  // REQUIRES: mu_ held. Appends a sampled token to choice c, applies the stop rules, emits its output.
  void on_token(const std::shared_ptr<RequestState>& state_ptr, Choice* c, int32_t token, TokenLogprobs* logprobs,
                std::vector<PendingOutput>* outs) {
    RequestState& state = *state_ptr;
    c->token_ids.push_back(token);
    if (c->constraint && std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(), token) == config_.eos_token_ids.end() &&
        !c->constraint->advance(token)) {
      // Only a first token drawn elsewhere without the mask can get here; the text so far stands.
      spdlog::warn("event=constraint_violated request_id={} token={}", state.request.request_id, token);
    }
    RequestOutput out = base_output(state, c, c->index);
    out.token_ids.push_back(token);
    if (logprobs != nullptr) out.logprobs.push_back(std::move(*logprobs));
    out.finish_reason = c->stop->push(token, c->num_output_tokens(), c->num_tokens(), &out.text, &out.stop_reason);
    const bool prefill_only = state.request.prefill_mode == PrefillMode::kPrefillOnly;
    if (out.finish_reason != FinishReason::kNone || prefill_only) {
      out.finished = true;
      spdlog::debug("choice finished request_id={} index={} reason={} prompt_tokens={} cached_tokens={} output_tokens={}",
                    state.request.request_id, c->index, finish_reason_name(out.finish_reason), c->num_prompt_tokens,
                    c->num_cached_prompt_tokens, c->num_output_tokens());
      if (prefill_only) {
        // The prompt's KV stays in its blocks for the transfer until release_blocks().
        HeldBlocks held;
        held.block_ids = scheduler_.finish_keep_blocks(c);
        held.num_tokens = c->num_prompt_tokens;
        out.kv_block_ids = held.block_ids;
        held_[state.request.request_id] = std::move(held);
      } else {
        scheduler_.finish(c);
      }
      mark_done(state, c->index);
    }
    outs->push_back({state_ptr, std::move(out)});
  }

  // REQUIRES: mu_ held.
  void mark_done(RequestState& state, int index) {
    if (state.done[index]) return;
    state.done[index] = true;
    if (++state.num_done == state.n) live_.erase(state.request.request_id);
  }

  // REQUIRES: mu_ held. Ends every unfinished choice of a request (abort, error, shutdown).
  void end_request(const std::shared_ptr<RequestState>& state_ptr, FinishReason reason, const Status& error,
                   std::vector<PendingOutput>* outs) {
    RequestState& state = *state_ptr;
    for (int i = 0; i < state.n; ++i) {
      if (state.done[i]) continue;
      Choice* c = i < static_cast<int>(state.choices.size()) ? state.choices[i].get() : nullptr;
      RequestOutput out = base_output(state, c, i);
      if (c != nullptr) {
        out.text = c->stop->flush();
        scheduler_.finish(c);
      }
      out.finished = true;
      out.finish_reason = reason;
      out.error = error;
      outs->push_back({state_ptr, std::move(out)});
    }
    for (int i = 0; i < state.n; ++i) mark_done(state, i);
  }

  // REQUIRES: mu_ held. After a successful forward: advance, sample, stop.
  void complete_step(const SchedulerOutput& step, std::vector<PendingOutput>* outs) {
    scheduler_.complete_step();
    // Plan every draw first, run them in parallel (each depends only on its own row, params and
    // stream), then apply them in schedule order.
    jobs_.clear();
    int row = 0;
    for (const ScheduledSeq& s : step.seqs) {
      if (!s.needs_sample) continue;
      const int r = row++;
      Choice* c = static_cast<Choice*>(s.seq);
      if (c->status != SequenceStatus::kRunning) continue;
      const RequestState& state = *c->request;
      // n > 1: every choice's first token comes from the same prompt logits (the leader's row).
      const int num_draws = c->index == 0 && state.n > 1 && !state.forked ? state.n : 1;
      for (int i = 0; i < num_draws; ++i) {
        SampleJob job;
        job.row = r;
        job.choice = c;
        job.in = sample_input(c);
        job.in.choice_index += i;  // the fork's draws: choices 0..n-1 from the leader's row
        job.in.allowed = step_masks_.mask(r);
        job.in.allowed_only_end = step_masks_.only_end(r);
        job.group_size = i == 0 ? num_draws : 0;
        jobs_.push_back(std::move(job));
      }
    }
    run_sample_jobs();
    generation_tokens_total_ += static_cast<int64_t>(jobs_.size());

    for (size_t j = 0; j < jobs_.size();) {
      Choice* c = jobs_[j].choice;
      RequestState& state = *c->request;
      std::shared_ptr<RequestState> state_ptr = live_.at(state.request.request_id);
      const bool want_logprobs = state.request.sampling.logprobs >= 0;
      if (c->index == 0 && state.n > 1 && !state.forked) {
        // The siblings share the prompt's full blocks and recompute only its partial last block
        // (see Scheduler::fork).
        state.forked = true;
        for (int i = 1; i < state.n; ++i) {
          SampleJob& job = jobs_[j + i];
          state.choices.push_back(new_choice(state, i));
          Choice* child = state.choices.back().get();
          child->token_ids.push_back(job.token);
          scheduler_.fork(c, child);
          child->token_ids.pop_back();
          on_token(state_ptr, child, job.token, want_logprobs ? &job.logprobs : nullptr, outs);
        }
      }
      on_token(state_ptr, c, jobs_[j].token, want_logprobs ? &jobs_[j].logprobs : nullptr, outs);
      j += jobs_[j].group_size;
    }
  }

  // Samples every planned job; rows in parallel when there are several (a 150k-entry row costs
  // 0.1-0.7 ms on one core, bench/sampler_bench).
  void run_sample_jobs() {
    if (step_draw_ == StepDraw::kArgmaxOnDevice) {
      for (SampleJob& job : jobs_) job.token = runner_.greedy_token(job.row);
      return;
    }
    if (step_draw_ == StepDraw::kSampleOnDevice) {
      for (SampleJob& job : jobs_) {
        job.token = runner_.sampled_token(job.row);
        if (job.in.params->logprobs < 0) continue;
        const backend::RowLogprobs& lp = runner_.sampled_logprobs(job.row);
        job.logprobs.token_id = job.token;
        job.logprobs.logprob = lp.chosen;
        job.logprobs.top.clear();
        for (int i = 0; i < lp.num_top; ++i) job.logprobs.top.push_back({lp.top_ids[i], lp.top_logprobs[i]});
      }
      return;
    }
    const int num_jobs = static_cast<int>(jobs_.size());
    const int num_threads = static_cast<int>(samplers_.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) if (num_jobs > 1)
    for (int j = 0; j < num_jobs; ++j) {
      Sampler& sampler = sampler_for_thread();
      SampleJob& job = jobs_[j];
      job.token = sampler.sample(runner_.logits_row(job.row), job.in, &job.logprobs);
    }
  }

  // REQUIRES: mu_ held. The sampler's input for choice c's next token.
  static SampleInput sample_input(const Choice* c) {
    const RequestState& state = *c->request;
    SampleInput in;
    in.params = &state.request.sampling;
    in.seed = state.seed;
    in.choice_index = c->index + state.request.choice_index;  // a migrated choice of several keeps its draws
    // A migrated request's resumed tokens are output: its draws continue their positions.
    const size_t prompt_len = static_cast<size_t>(c->num_prompt_tokens - state.request.num_resumed_tokens);
    in.prompt_token_ids = {c->token_ids.data(), prompt_len};
    in.output_token_ids = {c->token_ids.data() + prompt_len, c->token_ids.size() - prompt_len};
    return in;
  }

  // REQUIRES: mu_ held. Where the step's tokens are drawn: argmax on the device when every row is plain
  // greedy; a draw on the device when the backend can and every row is drawn once (device_rows_ and
  // device_edits_ then hold them, in row order); otherwise whole rows come back to the host sampler.
  StepDraw choose_step_draw(const SchedulerOutput& step) {
    bool all_greedy = true, all_device = device_sampling_, any_constrained = false;
    for (const ScheduledSeq& s : step.seqs) {
      if (!s.needs_sample) continue;
      const Choice* c = static_cast<const Choice*>(s.seq);
      if (c->constraint) {
        any_constrained = true;
        // min_tokens may mask the EOS a finished grammar needs; the host sampler settles that case.
        all_device = all_device && c->num_output_tokens() >= c->request->request.sampling.min_tokens;
      }
      all_greedy = all_greedy && samplers_[0]->is_plain_greedy(sample_input(c));
      // The first token of n > 1 choices is n draws from one row: host only.
      all_device = all_device && !(c->index == 0 && c->request->n > 1 && !c->request->forked);
    }
    if (all_greedy && !any_constrained) return StepDraw::kArgmaxOnDevice;
    if (!all_device) return StepDraw::kHostSampler;
    device_rows_.clear();
    device_edits_.clear();
    for (const ScheduledSeq& s : step.seqs) {
      if (!s.needs_sample) continue;
      const SampleInput in = sample_input(static_cast<const Choice*>(s.seq));
      backend::RowSampling row = Sampler::device_row(in);
      row.mask_row = step_masks_.slot(static_cast<int>(device_rows_.size()));
      row.edits_begin = static_cast<int>(device_edits_.size());
      samplers_[0]->device_edits(in, &device_edits_);
      row.edits_end = static_cast<int>(device_edits_.size());
      device_rows_.push_back(row);
    }
    return StepDraw::kSampleOnDevice;
  }

  // REQUIRES: mu_ held. Starts the masks of the step's constrained rows, computed while the forward runs.
  void begin_step_masks(const SchedulerOutput& step) {
    std::vector<StepMasks::Row> rows;
    int row = 0;
    for (const ScheduledSeq& s : step.seqs) {
      if (!s.needs_sample) continue;
      const int r = row++;
      const Choice* c = static_cast<const Choice*>(s.seq);
      if (!c->constraint) continue;
      const SamplingParams& p = c->request->request.sampling;
      StepMasks::Row m;
      m.row = r;
      m.constraint = c->constraint.get();
      m.remaining_tokens = std::min(p.max_tokens - c->num_output_tokens(), max_model_len_ - c->num_tokens());
      m.min_tokens_pending = c->num_output_tokens() < p.min_tokens && !p.ignore_eos;
      rows.push_back(m);
    }
    step_masks_.begin(std::move(rows), row);
  }

  Sampler& sampler_for_thread() {
    const int t = omp_get_thread_num();
    TANDEM_CHECK(t < static_cast<int>(samplers_.size()));
    if (!samplers_[t]) samplers_[t] = std::make_unique<Sampler>(config_.vocab_size, config_.eos_token_ids);
    return *samplers_[t];
  }

  void deliver(std::vector<PendingOutput>& outs) {
    for (PendingOutput& p : outs) {
      try {
        p.request->callback(std::move(p.output));
      } catch (const std::exception& e) {
        spdlog::error("output callback threw request_id={} error={}", p.output.request_id, e.what());
      }
    }
    outs.clear();
  }

  void loop() {
    std::vector<PendingOutput> outs;
    KvCacheEvents kv_events;  // the step's prefix-cache changes, delivered after its outputs
    using SteadyClock = std::chrono::steady_clock;
    auto ns = [](SteadyClock::duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
    while (true) {
      SteadyClock::time_point step_start, forward_start, forward_end;
      bool is_decode = false;
      bool device_lost = false;  // this step found the device unusable
      const SchedulerOutput* step = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          return stop_ || !intake_.empty() || !aborts_.empty() ||
                 (!blocked_ && scheduler_.num_running() + scheduler_.num_waiting() > 0);
        });
        if (stop_) break;
        step_start = std::chrono::steady_clock::now();
        for (auto& state : intake_) admit(state, &outs);
        intake_.clear();
        for (const std::string& id : aborts_) {
          auto it = live_.find(id);
          if (it == live_.end()) continue;
          std::shared_ptr<RequestState> state = it->second;
          end_request(state, FinishReason::kAbort, Status::Ok(), &outs);
        }
        aborts_.clear();
        step = &scheduler_.schedule();
        if (!step->preempted.empty()) {
          spdlog::debug("preempted num_seqs={} free_blocks={} running={} waiting={}", step->preempted.size(),
                        blocks_.num_free_blocks(), scheduler_.num_running(), scheduler_.num_waiting());
        }
        if (step->empty()) {
          // Nothing fits now: wait for blocks to be released or for new work.
          blocked_ = scheduler_.num_running() + scheduler_.num_waiting() > 0;
        } else {
          runner_.prepare(*step);
          begin_step_masks(*step);
          step_draw_ = choose_step_draw(*step);
        }
      }
      if (!step->empty()) {
        Status status;
        forward_start = SteadyClock::now();
        try {
          switch (step_draw_) {
            case StepDraw::kArgmaxOnDevice: status = runner_.execute_greedy(); break;
            case StepDraw::kSampleOnDevice:
              status = runner_.execute_sampled(device_rows_, device_edits_, step_masks_.all_masks(), [this] { step_masks_.wait(); });
              break;
            case StepDraw::kHostSampler: status = runner_.execute(); break;
          }
        } catch (const std::exception& e) {
          status = Status::Internal(std::string("backend forward threw: ") + e.what());
        }
        step_masks_.wait();
        forward_end = SteadyClock::now();
        is_decode = step->num_batched_tokens == static_cast<int>(step->seqs.size());
        std::lock_guard<std::mutex> lock(mu_);
        if (on_kv_events_) blocks_.take_events(&kv_events.stored, &kv_events.removed);
        if (status.ok()) {
          try {
            complete_step(*step, &outs);
          } catch (const std::exception& e) {  // e.g. out of memory: fail the step, keep serving
            status = Status::Internal(std::string("engine step failed: ") + e.what());
          }
        }
        if (!status.ok()) {
          spdlog::error("forward failed, failing the step's requests num_seqs={} error={}", step->seqs.size(), status.to_string());
          std::vector<std::shared_ptr<RequestState>> failed;
          for (const ScheduledSeq& s : step->seqs) {
            Choice* c = static_cast<Choice*>(s.seq);
            auto it = live_.find(c->request->request.request_id);
            if (it != live_.end() && std::find(failed.begin(), failed.end(), it->second) == failed.end()) failed.push_back(it->second);
          }
          for (auto& state : failed) end_request(state, FinishReason::kError, status, &outs);
          Status health = backend_->device_health();
          if (!health.ok() && device_failure_.ok()) {
            fail_everything(health, &outs);
            device_lost = true;
          }
        }
      }
      // The step is counted before its outputs are delivered, so a caller woken by the last output of a
      // batch reads stats that include the step that produced it; the delivery's own time is added after.
      if (!step->empty()) {
        const auto end = SteadyClock::now();
        const int64_t inside = ns(forward_end - forward_start), outside = ns((forward_start - step_start) + (end - forward_end));
        num_steps_.fetch_add(1, std::memory_order_relaxed);
        forward_ns_.fetch_add(inside, std::memory_order_relaxed);
        outside_forward_ns_.fetch_add(outside, std::memory_order_relaxed);
        if (is_decode) {
          num_decode_steps_.fetch_add(1, std::memory_order_relaxed);
          decode_forward_ns_.fetch_add(inside, std::memory_order_relaxed);
          decode_outside_forward_ns_.fetch_add(outside, std::memory_order_relaxed);
        }
      }
      const auto deliver_start = SteadyClock::now();
      deliver(outs);
      if (!kv_events.stored.empty() || !kv_events.removed.empty()) {
        on_kv_events_(std::move(kv_events));  // set before the first submit: read without the lock
        kv_events = KvCacheEvents{};
      }
      if (!step->empty()) {
        const int64_t delivery = ns(SteadyClock::now() - deliver_start);
        outside_forward_ns_.fetch_add(delivery, std::memory_order_relaxed);
        if (is_decode) decode_outside_forward_ns_.fetch_add(delivery, std::memory_order_relaxed);
      }
      if (device_lost) {
        std::function<void(const Status&)> callback;
        Status failure;
        {
          std::lock_guard<std::mutex> lock(mu_);
          callback = on_device_lost_;
          failure = device_failure_;
        }
        if (callback) callback(failure);
      }
    }
  }

  // REQUIRES: mu_ held. The device is unusable: every request ends with an error (waiting, running and
  // new ones alike, since no step can run any more), held KV is released, and submits are refused.
  void fail_everything(const Status& health, std::vector<PendingOutput>* outs) {
    device_failure_ = health;
    spdlog::error("event=device_lost device={} error=\"{}\" live_requests={}", backend_->device_name(), health.message(),
                  live_.size() + intake_.size());
    for (auto& state : intake_) admit(state, outs);
    intake_.clear();
    std::vector<std::shared_ptr<RequestState>> live;
    for (auto& [id, state] : live_) live.push_back(state);
    const Status error = Status::Internal(backend_->device_name() + " failed: " + health.message());
    for (auto& state : live) end_request(state, FinishReason::kError, error, outs);
    std::vector<std::string> held;
    for (const auto& [id, blocks] : held_) held.push_back(id);
    for (const std::string& id : held) release_held(id);
    aborts_.clear();
  }

  void set_on_kv_events(std::function<void(KvCacheEvents)> callback) override {
    std::lock_guard<std::mutex> lock(mu_);
    on_kv_events_ = std::move(callback);
    if (on_kv_events_) blocks_.enable_events();
  }

  std::vector<uint64_t> kv_cached_hashes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return blocks_.prefix_caching() ? blocks_.cached_hashes() : std::vector<uint64_t>{};
  }

  uint64_t kv_hash_salt() const override { return blocks_.prefix_caching() ? blocks_.salt() : 0; }

  void set_on_device_lost(std::function<void(const Status&)> callback) override {
    std::lock_guard<std::mutex> lock(mu_);
    on_device_lost_ = std::move(callback);
  }

  std::unique_ptr<backend::Backend> backend_;
  std::shared_ptr<TextStreamFactory> text_;
  const model::ModelConfig config_;
  const backend::KvCacheSpec kv_;
  const int max_model_len_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                                    // GUARDED_BY(mu_)
  Status device_failure_;  // the backend's device_health once a step found it failed    GUARDED_BY(mu_)
  std::function<void(const Status&)> on_device_lost_;                    // GUARDED_BY(mu_)
  std::function<void(KvCacheEvents)> on_kv_events_;  // set under mu_ before the first submit, then only read
  bool blocked_ = false;  // the last schedule() found nothing runnable     GUARDED_BY(mu_)
  BlockManager blocks_;                                                  // GUARDED_BY(mu_)
  Scheduler scheduler_;                                                  // GUARDED_BY(mu_)
  const int max_seqs_;
  std::deque<std::shared_ptr<RequestState>> intake_;                     // GUARDED_BY(mu_)
  std::vector<std::string> aborts_;                                      // GUARDED_BY(mu_)
  std::unordered_map<std::string, std::shared_ptr<RequestState>> live_;  // GUARDED_BY(mu_)
  std::unordered_map<std::string, HeldBlocks> held_;                     // GUARDED_BY(mu_)
  int64_t prompt_tokens_total_ = 0;                                      // GUARDED_BY(mu_)
  int64_t generation_tokens_total_ = 0;                                  // GUARDED_BY(mu_)
  int64_t next_seq_id_ = 0;                                              // GUARDED_BY(mu_)
  SplitMix64 seed_source_;                                               // GUARDED_BY(mu_)

  const std::shared_ptr<const ConstraintCompiler> constraints_;

  // Engine thread only.
  ModelRunner runner_;
  struct SampleJob {
    int row = 0;               // logits row of the step
    Choice* choice = nullptr;  // the sequence whose row it is (the leader, for a fork's draws)
    SampleInput in;
    int group_size = 1;        // on a group's first job: draws for that row (n at a fork)
    int32_t token = -1;
    TokenLogprobs logprobs{-1, 0.0f, {}};
  };
  std::vector<SampleJob> jobs_;
  std::vector<std::unique_ptr<Sampler>> samplers_;  // one per OpenMP thread, made on first use
  StepDraw step_draw_ = StepDraw::kHostSampler;  // how the step in flight draws its tokens
  std::vector<backend::RowSampling> device_rows_;  // [sampled rows] for kSampleOnDevice
  std::vector<backend::LogitEdit> device_edits_;   // their edits, back to back
  bool device_sampling_ = false;  // the backend can draw tokens on its device (Backend::samples_on_device)
  StepMasks step_masks_;          // the step in flight's constrained-row masks
  // Step timing (written by the engine thread, read by stats()).
  std::atomic<int64_t> num_steps_{0}, forward_ns_{0}, outside_forward_ns_{0};
  std::atomic<int64_t> num_decode_steps_{0}, decode_forward_ns_{0}, decode_outside_forward_ns_{0};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Engine> create_engine(std::unique_ptr<backend::Backend> backend, const EngineOptions& options,
                                      std::shared_ptr<TextStreamFactory> text) {
  if (!backend) throw Error("create_engine: no backend");
  return std::make_unique<EngineImpl>(std::move(backend), options, std::move(text));
}

}  // namespace tandem::engine
