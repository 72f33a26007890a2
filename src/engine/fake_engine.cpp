// FakeEngine (see fake_engine.h): one thread; each step prefills what is waiting (sleeping
// prefill_us_per_token per token) and emits one token for every running sequence.
#include "engine/fake_engine.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "backend/backend.h"

namespace tandem::engine {
namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}

// The value every float of (layer, block i) holds for a prompt: a hash of the block's tokens.
float kv_value(const std::vector<int32_t>& prompt, int block_size, int layer, int block) {
  uint64_t h = mix(0, static_cast<uint64_t>(layer));
  for (int t = block * block_size; t < std::min<int>((block + 1) * block_size, prompt.size()); ++t) h = mix(h, prompt[t]);
  return static_cast<float>(h % 1000003);
}

uint64_t prompt_hash(const std::vector<int32_t>& prompt) {
  uint64_t h = 1;
  for (int32_t t : prompt) h = mix(h, static_cast<uint64_t>(t));
  return h;
}

// Backend whose only real feature is the KV pool: [num_layers, num_blocks, block_floats] fp32, host.
class FakeBackend : public backend::Backend {
 public:
  FakeBackend(const FakeEngineOptions& o) {
    config_.vocab_size = o.vocab_size;
    config_.num_layers = o.num_layers;
    config_.max_position_embeddings = 1 << 16;
    config_.architecture_name = "FakeForCausalLM";
    spec_.num_layers = o.num_layers;
    spec_.num_blocks = o.num_blocks;
    spec_.block_size = o.block_size;
    spec_.num_kv_heads = 1;
    spec_.head_dim = o.block_floats / (2 * o.block_size) > 0 ? o.block_floats / (2 * o.block_size) : 1;
    pool_.assign(static_cast<size_t>(o.num_layers) * o.num_blocks * spec_.block_elements(), 0.0f);
  }
  const model::ModelConfig& config() const override { return config_; }
  const backend::KvCacheSpec& kv_cache_spec() const override { return spec_; }
  std::string device_name() const override { return "fake"; }
  Status forward(const backend::ForwardBatch&, std::span<float>) override {
    return Status::Unsupported("the fake backend computes nothing");
  }
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, out.size()));
    std::memcpy(out.data(), at(layer, block), out.size());
    return Status::Ok();
  }
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, in.size()));
    std::memcpy(at(layer, block), in.data(), in.size());
    return Status::Ok();
  }
  float* at(int layer, int block) {
    return pool_.data() + (static_cast<size_t>(layer) * spec_.num_blocks + block) * spec_.block_elements();
  }

 private:
  Status check(int layer, int block, size_t size) const {
    if (layer < 0 || layer >= spec_.num_layers || block < 0 || block >= spec_.num_blocks) {
      return Status::InvalidArgument("block out of range");
    }
    if (size != spec_.block_bytes()) return Status::InvalidArgument("buffer is not one block");
    return Status::Ok();
  }
  model::ModelConfig config_;
  backend::KvCacheSpec spec_;
  std::vector<float> pool_;
};

struct FakeChoice {
  int index = 0;
  int32_t last_token = -1;
  int num_output = 0;
  int resumed = 0;          // a migrated request: output positions produced before it moved here
  std::string resumed_text; // their text the client does not have yet (streamed with the next token)
  bool finished = false;
  std::unique_ptr<TextStream> text;
};

struct FakeSequence {
  Request request;
  OutputCallback on_output;
  std::vector<int32_t> blocks;
  bool prefilled = false;
  std::vector<FakeChoice> choices;
  uint64_t hash = 0;
};

class FakeEngine : public Engine {
 public:
  FakeEngine(const FakeEngineOptions& options, std::shared_ptr<TextStreamFactory> text)
      : options_(options), text_(std::move(text)), backend_(options) {
    for (int b = options.num_blocks - 1; b >= 0; --b) free_.push_back(b);
    thread_ = std::thread([this] {
      // Named as the real engine's thread is, for per-thread CPU accounting (bench/serve_cpu_cost.py).
      pthread_setname_np(pthread_self(), "tandem-engine");
      loop();
    });
  }
  ~FakeEngine() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Status submit(Request request, OutputCallback on_output) override {
    const auto& s = request.sampling;
    if (request.prompt_token_ids.empty()) return Status::InvalidArgument("prompt is empty");
    if (s.max_tokens < 1) return Status::InvalidArgument("max_tokens must be >= 1");
    if (s.n < 1) return Status::InvalidArgument("n must be >= 1");
    if (request.choice_index < 0 || (request.choice_index > 0 && s.n != 1)) {
      return Status::InvalidArgument("choice_index must be 0, or >= 0 with n = 1");
    }
    for (int32_t t : request.prompt_token_ids) {
      if (t < 0 || t >= options_.vocab_size) return Status::InvalidArgument("token id " + std::to_string(t) + " is outside the vocabulary");
    }
    const int needed = num_blocks_for(request.prompt_token_ids.size() + s.max_tokens);
    if (needed > options_.num_blocks) return Status::TooLarge("prompt does not fit in the KV pool");
    auto seq = std::make_shared<FakeSequence>();
    const int resumed = request.num_resumed_tokens;
    if (resumed < 0 || resumed >= static_cast<int>(request.prompt_token_ids.size())) {
      return Status::InvalidArgument("num_resumed_tokens must be in [0, prompt length)");
    }
    // A migrated request continues as if it had never moved: its tokens hash the original prompt.
    seq->hash = prompt_hash({request.prompt_token_ids.begin(), request.prompt_token_ids.end() - resumed});
    for (int i = 0; i < (request.prefill_mode == PrefillMode::kPrefillOnly ? 1 : s.n); ++i) {
      FakeChoice c;
      c.index = i;
      if (text_) c.text = text_->new_stream(s.skip_special_tokens);
      if (resumed > 0) {
        c.resumed = resumed;
        c.last_token = request.prompt_token_ids.back();
        std::string text;
        if (c.text) {
          for (auto t = request.prompt_token_ids.end() - resumed; t != request.prompt_token_ids.end(); ++t) text += c.text->push(*t);
        }
        const auto have = static_cast<size_t>(std::max<int64_t>(0, request.resumed_text_bytes));
        if (text.size() > have) c.resumed_text = text.substr(have);
      }
      seq->choices.push_back(std::move(c));
    }
    seq->on_output = std::move(on_output);
    std::lock_guard<std::mutex> lock(mu_);
    if (seqs_.count(request.request_id)) return Status::InvalidArgument("duplicate request id " + request.request_id);
    auto reserved = reservations_.find(request.request_id);
    if (reserved != reservations_.end()) {
      seq->blocks = std::move(reserved->second);
      reservations_.erase(reserved);
    }
    seq->request = std::move(request);
    seqs_[seq->request.request_id] = seq;
    waiting_.push_back(seq);
    cv_.notify_all();
    return Status::Ok();
  }

  void abort(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(request_id);
    cv_.notify_all();
  }

  StatusOr<KvReservation> reserve_kv(const std::string& request_id,
                                             const std::vector<int32_t>& prompt) override {
    std::lock_guard<std::mutex> lock(mu_);
    const int needed = num_blocks_for(prompt.size());
    if (needed > static_cast<int>(free_.size())) return Status::ResourceExhausted("no free KV blocks");
    std::vector<int32_t> blocks = take_blocks(needed);
    reservations_[request_id] = blocks;
    return KvReservation{blocks, 0};
  }

  void release_blocks(const std::string& request_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto* table : {&reservations_, &held_}) {
      auto it = table->find(request_id);
      if (it != table->end()) {
        free_.insert(free_.end(), it->second.begin(), it->second.end());
        table->erase(it);
      }
    }
  }

  EngineStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s;
    s.num_running = static_cast<int>(running_.size());
    s.num_waiting = static_cast<int>(waiting_.size());
    s.num_kv_blocks_total = options_.num_blocks;
    s.num_kv_blocks_used = options_.num_blocks - static_cast<int>(free_.size());
    s.prompt_tokens_total = prompt_tokens_total_;
    s.generation_tokens_total = generation_tokens_total_;
    return s;
  }
  backend::Backend& backend() override { return backend_; }

 private:
  int num_blocks_for(size_t tokens) const { return static_cast<int>((tokens + options_.block_size - 1) / options_.block_size); }

  std::vector<int32_t> take_blocks(int count) {  // REQUIRES: mu_ held, count <= free_.size()
    std::vector<int32_t> blocks(free_.end() - count, free_.end());
    free_.resize(free_.size() - count);
    return blocks;
  }

  int32_t next_token(const FakeSequence& seq, const FakeChoice& c) const {
    if (!options_.script.empty()) {
      return options_.script[std::min(static_cast<size_t>(c.num_output + c.resumed), options_.script.size() - 1)];
    }
    uint64_t h = mix(seq.hash, static_cast<uint64_t>(c.last_token) + 7);
    // A sampled choice's tokens depend on its index among the request's choices (choice_index for one
    // that migrated alone) and its output position, as the real sampler's draws do.
    const uint64_t choice = static_cast<uint64_t>(c.index + seq.request.choice_index);
    if (seq.request.sampling.temperature > 0) h = mix(h, choice * 31 + c.num_output + c.resumed);
    return static_cast<int32_t>(h % static_cast<uint64_t>(std::min(options_.vocab_size, 100000)));
  }

  // Writes (kPrefillOnly, kLocal) or checks (kDecodeFromKv) the prompt's KV pattern.
  bool fill_or_check_kv(FakeSequence& seq, bool check) {
    const auto& prompt = seq.request.prompt_token_ids;
    const int num_prompt_blocks = num_blocks_for(prompt.size());
    for (int layer = 0; layer < options_.num_layers; ++layer) {
      for (int b = 0; b < num_prompt_blocks; ++b) {
        float value = kv_value(prompt, options_.block_size, layer, b);
        float* data = backend_.at(layer, seq.blocks[b]);
        for (size_t i = 0; i < backend_.kv_cache_spec().block_elements(); ++i) {
          if (check && data[i] != value) return false;
          data[i] = value;
        }
      }
    }
    return true;
  }

  void emit(FakeSequence& seq, FakeChoice& c, std::vector<int32_t> tokens, bool finished, FinishReason reason,
            Status error = Status::Ok()) {
    RequestOutput out;
    out.request_id = seq.request.request_id;
    out.index = c.index;
    out.text = std::move(c.resumed_text);
    c.resumed_text.clear();
    if (c.text) {
      for (int32_t t : tokens) out.text += c.text->push(t);
    }
    if (seq.request.sampling.logprobs >= 0) {
      for (int32_t t : tokens) {
        TokenLogprobs lp{t, -0.5f, {}};
        for (int k = 0; k < seq.request.sampling.logprobs; ++k) lp.top.push_back({t + k, -0.5f - k});
        out.logprobs.push_back(std::move(lp));
      }
    }
    out.token_ids = std::move(tokens);
    out.finished = finished;
    out.finish_reason = reason;
    out.error = std::move(error);
    out.num_prompt_tokens = static_cast<int>(seq.request.prompt_token_ids.size());
    out.num_output_tokens = c.num_output;
    if (finished && seq.request.prefill_mode == PrefillMode::kPrefillOnly) out.kv_block_ids = seq.blocks;
    seq.on_output(std::move(out));
  }

  // Appends one token to c; true when the choice finished.
  bool advance(FakeSequence& seq, FakeChoice& c, int32_t token) {
    c.last_token = token;
    ++c.num_output;
    ++generation_tokens_total_;
    const auto& s = seq.request.sampling;
    FinishReason reason = FinishReason::kNone;
    if (c.num_output >= s.min_tokens &&
        (std::find(s.stop_token_ids.begin(), s.stop_token_ids.end(), token) != s.stop_token_ids.end() ||
         (!s.ignore_eos && std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), token) !=
                               options_.eos_token_ids.end()))) {
      reason = FinishReason::kStop;
    } else if (c.num_output >= s.max_tokens || seq.request.prefill_mode == PrefillMode::kPrefillOnly) {
      reason = FinishReason::kLength;
    } else if (!options_.script.empty() && c.num_output >= static_cast<int>(options_.script.size())) {
      reason = FinishReason::kStop;
    }
    c.finished = reason != FinishReason::kNone;
    emit(seq, c, {token}, c.finished, reason);
    return c.finished;
  }

  void finish_all(FakeSequence& seq, FinishReason reason, Status error = Status::Ok()) {
    for (auto& c : seq.choices) {
      if (!c.finished) {
        c.finished = true;
        emit(seq, c, {}, true, reason, error);
      }
    }
  }

  void free_seq(FakeSequence& seq, bool hold) {  // REQUIRES: mu_ held
    if (hold) {
      held_[seq.request.request_id] = seq.blocks;
    } else {
      free_.insert(free_.end(), seq.blocks.begin(), seq.blocks.end());
    }
    seq.blocks.clear();
    seqs_.erase(seq.request.request_id);
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      // With paced steps and sequences running, a new request joins at the next step, as in the real
      // engine (its first output comes after the step in progress, not at once).
      auto paced = [&] { return options_.step_ms > 0 && !running_.empty(); };
      auto ready = [&] {
        return stop_ || !aborts_.empty() || (!waiting_.empty() && !paced()) || (!running_.empty() && options_.step_ms == 0);
      };
      if (paced()) {
        cv_.wait_until(lock, next_step_, ready);
      } else {
        cv_.wait_for(lock, std::chrono::milliseconds(100), ready);
      }
      if (stop_) break;
      const bool at_step = !paced() || std::chrono::steady_clock::now() >= next_step_;
      for (const auto& id : aborts_) {
        auto it = seqs_.find(id);
        if (it == seqs_.end()) continue;
        auto seq = it->second;
        finish_all(*seq, FinishReason::kAbort);
        waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
        running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
        free_seq(*seq, false);
      }
      aborts_.clear();
      // Admit what fits, oldest first.
      while (at_step && !waiting_.empty()) {
        auto seq = waiting_.front();
        const auto& r = seq->request;
        const int total = num_blocks_for(r.prompt_token_ids.size() + r.sampling.max_tokens);
        const int missing = total - static_cast<int>(seq->blocks.size());
        if (missing > static_cast<int>(free_.size())) break;
        waiting_.pop_front();
        auto more = take_blocks(std::max(0, missing));
        seq->blocks.insert(seq->blocks.end(), more.begin(), more.end());
        prompt_tokens_total_ += r.prompt_token_ids.size();
        if (r.prefill_mode == PrefillMode::kDecodeFromKv) {
          if (!fill_or_check_kv(*seq, /*check=*/true)) {
            finish_all(*seq, FinishReason::kError, Status::Internal("KV received for the prompt does not match it"));
            free_seq(*seq, false);
            continue;
          }
          // As the real engine: the first token (sampled by the prefill worker) is emitted here.
          bool all_done = true;
          for (auto& c : seq->choices) all_done &= advance(*seq, c, r.first_token_id);
          if (all_done) {
            free_seq(*seq, false);
            continue;
          }
        } else {
          if (options_.prefill_us_per_token > 0) {
            lock.unlock();
            std::this_thread::sleep_for(std::chrono::microseconds(
                static_cast<int64_t>(options_.prefill_us_per_token * r.prompt_token_ids.size())));
            lock.lock();
          }
          fill_or_check_kv(*seq, /*check=*/false);
          bool all_done = true;
          for (auto& c : seq->choices) all_done &= advance(*seq, c, next_token(*seq, c));
          if (all_done) {
            free_seq(*seq, r.prefill_mode == PrefillMode::kPrefillOnly);
            continue;
          }
        }
        running_.push_back(seq);
      }
      // One decode step.
      if (options_.step_ms > 0 && !running_.empty()) {
        auto now = std::chrono::steady_clock::now();
        if (now < next_step_) continue;
        next_step_ = now + std::chrono::milliseconds(options_.step_ms);
      }
      std::vector<std::shared_ptr<FakeSequence>> still;
      for (auto& seq : running_) {
        bool all_done = true;
        for (auto& c : seq->choices) {
          if (!c.finished) all_done &= advance(*seq, c, next_token(*seq, c));
        }
        if (all_done) {
          free_seq(*seq, false);
        } else {
          still.push_back(seq);
        }
      }
      running_.swap(still);
    }
    for (auto& [id, seq] : seqs_) finish_all(*seq, FinishReason::kAbort);
  }

  const FakeEngineOptions options_;
  std::shared_ptr<TextStreamFactory> text_;
  FakeBackend backend_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                            // GUARDED_BY(mu_)
  std::vector<int32_t> free_;                                    // GUARDED_BY(mu_)
  std::map<std::string, std::vector<int32_t>> reservations_;     // GUARDED_BY(mu_)
  std::map<std::string, std::vector<int32_t>> held_;             // GUARDED_BY(mu_): finished kPrefillOnly
  std::map<std::string, std::shared_ptr<FakeSequence>> seqs_;        // GUARDED_BY(mu_)
  std::deque<std::shared_ptr<FakeSequence>> waiting_;                // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<FakeSequence>> running_;               // GUARDED_BY(mu_)
  std::vector<std::string> aborts_;                              // GUARDED_BY(mu_)
  int64_t prompt_tokens_total_ = 0;                              // GUARDED_BY(mu_)
  int64_t generation_tokens_total_ = 0;                          // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_step_{};
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Engine> create_fake_engine(const FakeEngineOptions& options, std::shared_ptr<TextStreamFactory> text) {
  return std::make_unique<FakeEngine>(options, std::move(text));
}

}  // namespace tandem::engine
