#include "engine/stop_checker.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace tandem::engine {

StopChecker::StopChecker(const SamplingParams* params, std::vector<int> eos_token_ids, int max_model_len,
                         std::unique_ptr<TextStream> text)
    : params_(params), eos_token_ids_(std::move(eos_token_ids)), max_model_len_(max_model_len), text_(std::move(text)) {
  for (const std::string& s : params_->stop) max_stop_len_ = std::max(max_stop_len_, s.size());
}

FinishReason StopChecker::push(int32_t token_id, int num_output_tokens, int num_tokens, std::string* text_out,
                               std::string* stop_reason) {
  const SamplingParams& p = *params_;
  const bool may_stop = num_output_tokens >= p.min_tokens;
  if (may_stop) {
    const bool is_eos = !p.ignore_eos && std::find(eos_token_ids_.begin(), eos_token_ids_.end(), token_id) != eos_token_ids_.end();
    const bool is_stop_id = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token_id) != p.stop_token_ids.end();
    if (is_eos || is_stop_id) {
      // The terminating token's text is left out; stop_reason is the id for a stop token, empty for EOS.
      if (is_stop_id && !is_eos) *stop_reason = std::to_string(token_id);
      *text_out += flush();
      return FinishReason::kStop;
    }
  }

  if (text_) {
    const size_t before = output_text_.size();
    try {
      output_text_ += text_->push(token_id);
    } catch (const std::exception& e) {
      spdlog::error("detokenizer failed token_id={} error={}", token_id, e.what());
    }
    if (may_stop && max_stop_len_ > 0 && output_text_.size() > before) {
      // A match must end inside the new text; it can start up to max_stop_len - 1 bytes earlier.
      const size_t from = before >= max_stop_len_ - 1 ? before - (max_stop_len_ - 1) : 0;
      size_t best = std::string::npos;
      const std::string* best_stop = nullptr;
      for (const std::string& s : p.stop) {
        if (s.empty()) continue;
        const size_t at = output_text_.find(s, from);
        if (at != std::string::npos && at < best) {
          best = at;
          best_stop = &s;
        }
      }
      if (best_stop != nullptr) {
        output_text_.resize(best);
        *stop_reason = *best_stop;
        *text_out += flush();
        return FinishReason::kStop;
      }
    }
  }

  if (num_output_tokens >= p.max_tokens || num_tokens >= max_model_len_) {
    *text_out += flush();
    return FinishReason::kLength;
  }

  if (text_) {
    // Hold back the longest suffix that is a proper prefix of some stop string.
    size_t hold = 0;
    const size_t pending = output_text_.size() - num_emitted_;
    for (const std::string& s : p.stop) {
      for (size_t k = std::min(pending, s.size() - (s.empty() ? 0 : 1)); k > hold; --k) {
        if (output_text_.compare(output_text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
      }
    }
    const size_t ready = output_text_.size() - hold;
    if (ready > num_emitted_) {
      text_out->append(output_text_, num_emitted_, ready - num_emitted_);
      num_emitted_ = ready;
    }
  }
  return FinishReason::kNone;
}

void StopChecker::resume(std::span<const int32_t> tokens, int64_t emitted_bytes) {
  if (!text_) return;
  for (int32_t t : tokens) {
    try {
      output_text_ += text_->push(t);
    } catch (const std::exception& e) {
      spdlog::error("detokenizer failed token_id={} error={}", t, e.what());
    }
  }
  num_emitted_ = std::min(output_text_.size(), static_cast<size_t>(std::max<int64_t>(0, emitted_bytes)));
}

std::string StopChecker::flush() {
  std::string rest = output_text_.substr(std::min(num_emitted_, output_text_.size()));
  num_emitted_ = output_text_.size();
  return rest;
}

}  // namespace tandem::engine
