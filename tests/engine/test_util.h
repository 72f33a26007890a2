// Test doubles for the engine: a tiny fake Backend whose "model" reads its answer back from the KV
// cache (so a wrong block table or a stale cached block changes the tokens), a TextStream that spells
// each token id as a fixed string, and a collector of RequestOutputs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "engine/engine.h"

namespace tandem::engine::testing {

// Fake model over a vocabulary of kVocab ids. KV layout per block: [2][block_size] floats, K = token id,
// V = position (one layer, one head of dim 1). The next token after a context is
//   kCount: (token at the last position + 1) % (kVocab - 1)    — a counter, to script stop tests
//   kHash:  a hash of every (position, token) read back from the KV blocks, % (kVocab - 1)
// so the answer depends on the KV the engine arranged. Logits: 8 at the answer, 0 elsewhere, except
// the EOS id (kVocab - 1) which gets `eos_logit` (to test min_tokens / ignore_eos).
class FakeBackend : public backend::Backend {
 public:
  static constexpr int kVocab = 64;
  enum class Mode { kCount, kHash };

  FakeBackend(int num_blocks, int block_size = 4, Mode mode = Mode::kHash) : mode_(mode) {
    config_.architecture_name = "Fake";
    config_.vocab_size = kVocab;
    config_.hidden_size = 1;
    config_.num_layers = 1;
    config_.num_heads = 1;
    config_.num_kv_heads = 1;
    config_.head_dim = 1;
    config_.max_position_embeddings = 1 << 20;
    config_.eos_token_ids = {kVocab - 1};
    kv_.num_layers = 1;
    kv_.num_blocks = num_blocks;
    kv_.block_size = block_size;
    kv_.num_kv_heads = 1;
    kv_.head_dim = 1;
    pool_.assign(static_cast<size_t>(num_blocks) * kv_.block_elements(), -1.0f);
  }

  const model::ModelConfig& config() const override { return config_; }
  const backend::KvCacheSpec& kv_cache_spec() const override { return kv_; }
  std::string device_name() const override { return "fake"; }
  // A "device" draw that records what the engine asked for and returns each row's argmax (so the tokens
  // stay the reference's whatever the parameters) with made-up logprobs: chosen -1.25, one alternative
  // (token 0, -3).
  bool samples_on_device() const override { return device_sampling_; }
  Status forward_sampled(const backend::ForwardBatch& b, const backend::DeviceSamplingStep& step) override {
    std::vector<float> logits(static_cast<size_t>(b.num_logits()) * kVocab);
    TANDEM_RETURN_IF_ERROR(forward(b, logits));
    if (step.await_masks) step.await_masks();  // as a device backend: after the forward is under way
    for (size_t r = 0; r < step.rows.size(); ++r) {
      const backend::RowSampling& row = step.rows[r];
      if (row.mask_row >= 0) {  // constrained: tokens outside the mask are -inf, as the CUDA draw does
        const uint32_t* mask = step.masks.data() + static_cast<size_t>(row.mask_row) * ((kVocab + 31) / 32);
        for (int t = 0; t < kVocab; ++t) {
          if (!(mask[t >> 5] >> (t & 31) & 1u)) logits[r * kVocab + t] = -INFINITY;
        }
      }
      sampled_rows_.push_back(row);
      sampled_edits_.emplace_back(step.edits.begin() + row.edits_begin, step.edits.begin() + row.edits_end);
      step.tokens[r] = backend::argmax(std::span<const float>(logits.data() + r * kVocab, kVocab));
      if (row.num_logprobs >= 0) {
        backend::RowLogprobs& lp = step.logprobs[r];
        lp.chosen = -1.25f;
        lp.num_top = std::min(row.num_logprobs, 1);
        lp.top_ids[0] = 0;
        lp.top_logprobs[0] = -3.0f;
      }
    }
    return Status::Ok();
  }

  Status device_health() const override {
    return device_lost_ ? Status::Internal("injected sticky device failure") : Status::Ok();
  }

  Status forward(const backend::ForwardBatch& b, std::span<float> logits) override {
    TANDEM_RETURN_IF_ERROR(backend::validate_batch(b, kv_, kVocab));
    while (hold_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ++num_calls_;
    max_tokens_seen_ = std::max(max_tokens_seen_, b.num_tokens());
    max_seqs_seen_ = std::max(max_seqs_seen_, b.num_seqs());
    if (device_lost_) return Status::Internal("device already failed");
    if (fail_at_call_ == num_calls_) {
      device_lost_ = sticky_failure_.load();
      return Status::Internal("injected device failure");
    }
    const int bs = kv_.block_size;
    for (int s = 0; s < b.num_seqs(); ++s) {
      for (int t = b.query_starts[s]; t < b.query_starts[s + 1]; ++t) {
        const int pos = b.positions[t];
        float* block = slot(b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + pos / bs]);
        block[pos % bs] = static_cast<float>(b.token_ids[t]);
        block[bs + pos % bs] = static_cast<float>(pos);
      }
    }
    std::fill(logits.begin(), logits.end(), 0.0f);
    for (int r = 0; r < b.num_logits(); ++r) {
      const int t = b.logits_indices[r];
      int s = 0;
      while (b.query_starts[s + 1] <= t) ++s;
      const int context = b.positions[t] + 1;
      uint64_t h = 1469598103934665603ull;
      int last = 0;
      for (int pos = 0; pos < context; ++pos) {
        const float* block = slot(b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + pos / bs]);
        if (block[bs + pos % bs] != static_cast<float>(pos)) return Status::Internal("fake KV: position mismatch");
        last = static_cast<int>(block[pos % bs]);
        h = (h ^ static_cast<uint64_t>(last * 131 + pos)) * 1099511628211ull;
      }
      const int answer = mode_ == Mode::kCount ? (last + 1) % (kVocab - 1) : static_cast<int>(h % (kVocab - 1));
      float* row = logits.data() + static_cast<size_t>(r) * kVocab;
      row[answer] = 8.0f;
      row[kVocab - 1] = eos_logit_;
    }
    return Status::Ok();
  }

  Status read_kv_block(int layer, int block, std::span<std::byte> out) override {
    if (layer != 0 || block < 0 || block >= kv_.num_blocks || out.size() != kv_.block_bytes()) return Status::InvalidArgument("bad block");
    std::memcpy(out.data(), slot(block), out.size());
    return Status::Ok();
  }
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override {
    if (layer != 0 || block < 0 || block >= kv_.num_blocks || in.size() != kv_.block_bytes()) return Status::InvalidArgument("bad block");
    std::memcpy(slot(block), in.data(), in.size());
    return Status::Ok();
  }

  // The token the fake model produces after `tokens` (the reference for kHash mode).
  static int32_t next_token(const std::vector<int32_t>& tokens, Mode mode) {
    uint64_t h = 1469598103934665603ull;
    for (size_t pos = 0; pos < tokens.size(); ++pos) h = (h ^ static_cast<uint64_t>(tokens[pos] * 131 + static_cast<int>(pos))) * 1099511628211ull;
    return mode == Mode::kCount ? (tokens.back() + 1) % (kVocab - 1) : static_cast<int32_t>(h % (kVocab - 1));
  }

  std::atomic<bool> hold_{false};  // forward() waits while set: lets a test queue work deterministically
  std::atomic<int> fail_at_call_{0};
  bool device_sampling_ = false;                       // set before the engine is created
  std::vector<backend::RowSampling> sampled_rows_;     // every row forward_sampled drew, in order
  std::vector<std::vector<backend::LogitEdit>> sampled_edits_;  // and each one's edits
  std::atomic<bool> sticky_failure_{false};  // the failure at fail_at_call_ leaves the device unusable
  std::atomic<bool> device_lost_{false};
  std::atomic<int> num_calls_{0};
  int max_tokens_seen_ = 0;
  int max_seqs_seen_ = 0;
  float eos_logit_ = -100.0f;

 private:
  float* slot(int block) { return pool_.data() + static_cast<size_t>(block) * kv_.block_elements(); }
  const float* slot(int block) const { return pool_.data() + static_cast<size_t>(block) * kv_.block_elements(); }
  Mode mode_;
  model::ModelConfig config_;
  backend::KvCacheSpec kv_;
  std::vector<float> pool_;  // [num_blocks, 2, block_size] fp32
};

// Token id t reads as "<t>" except ids listed in `spelling`.
class FakeTextStream : public TextStream {
 public:
  explicit FakeTextStream(const std::map<int32_t, std::string>* spelling) : spelling_(spelling) {}
  std::string push(int32_t token_id) override {
    auto it = spelling_->find(token_id);
    return it != spelling_->end() ? it->second : "<" + std::to_string(token_id) + ">";
  }

 private:
  const std::map<int32_t, std::string>* spelling_;
};

class FakeTextStreamFactory : public TextStreamFactory {
 public:
  std::map<int32_t, std::string> spelling;
  std::unique_ptr<TextStream> new_stream(bool) override { return std::make_unique<FakeTextStream>(&spelling); }
};

// Collects every output of every request; wait_all() blocks (with a deadline) until each submitted
// request has one finished output per choice.
class Collector {
 public:
  struct Choice {
    std::vector<int32_t> tokens;
    std::string text;
    std::vector<TokenLogprobs> logprobs;
    int num_finished = 0;
    RequestOutput last;
  };

  OutputCallback callback() {
    return [this](RequestOutput out) {
      std::lock_guard<std::mutex> lock(mu_);
      Choice& c = choices_[{out.request_id, out.index}];
      c.tokens.insert(c.tokens.end(), out.token_ids.begin(), out.token_ids.end());
      c.text += out.text;
      for (auto& lp : out.logprobs) c.logprobs.push_back(lp);
      if (out.finished) {
        ++c.num_finished;
        ++num_finished_;
      }
      c.last = std::move(out);
      cv_.notify_all();
    };
  }

  // Waits until `expected` choices in all have finished; false on timeout.
  bool wait_finished(int expected, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return num_finished_ >= expected; });
  }

  Choice get(const std::string& id, int index = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    return choices_[{id, index}];
  }
  int num_finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return num_finished_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<std::string, int>, Choice> choices_;
  int num_finished_ = 0;
};

inline Request make_request(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  Request r;
  r.request_id = id;
  r.prompt_token_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  return r;
}

}  // namespace tandem::engine::testing
