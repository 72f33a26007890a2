// StopChecker: the stop rules of one choice, applied after each generated token, and the text it may
// stream so far. Rules, in vLLM's order: nothing stops before min_tokens (except max_tokens / the model
// length); then EOS (unless ignore_eos), stop_token_ids, stop strings; then max_tokens and the model's
// length limit. A stop string is matched on the detokenized output text, also across token
// boundaries; the text is trimmed before it. Text that could still be the start of a stop string is
// held back until the next token settles it, so a client never sees a stop string's prefix.
// The text of a token that ends the choice by EOS or a stop token id is not emitted (its id is).
//
// Ownership: owns the choice's TextStream (may be null: no text, no stop strings).
// Thread-safety: none (the engine loop).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/request.h"

namespace tandem::engine {

class StopChecker {
 public:
  // REQUIRES: `params` outlives the checker.
  StopChecker(const SamplingParams* params, std::vector<int> eos_token_ids, int max_model_len,
              std::unique_ptr<TextStream> text);

  // Takes the choice's newest token. `num_output_tokens` counts it; `num_tokens` is prompt + output.
  // Appends the text now safe to stream to `text_out`. Returns kNone to go on, or why it finished
  // (then `stop_reason` names the stop string or token id, and all remaining text has been flushed).
  FinishReason push(int32_t token_id, int num_output_tokens, int num_tokens, std::string* text_out,
                    std::string* stop_reason);
  // A migrated choice: `tokens` were its output elsewhere, and the client has the first
  // `emitted_bytes` bytes of their text. They join the text (stop strings match across them) without
  // stop checks; text past emitted_bytes (held back there) streams with the next token.
  void resume(std::span<const int32_t> tokens, int64_t emitted_bytes);
  // Everything held back, for a choice that ends for another reason (abort, error).
  std::string flush();

 private:
  const SamplingParams* params_;
  std::vector<int> eos_token_ids_;
  int max_model_len_;
  std::unique_ptr<TextStream> text_;
  size_t max_stop_len_ = 0;
  std::string output_text_;   // all text so far (trimmed at a stop string)
  size_t num_emitted_ = 0;    // bytes of output_text_ already streamed
};

}  // namespace tandem::engine
