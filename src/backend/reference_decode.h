// Greedy decoding of one sequence straight on a Backend, with no engine: blocks 0.. in order, one
// prefill then one token per step. The simplest correct driver, for tests and debugging.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace tandem::backend {

struct ReferenceDecodeResult {
  std::vector<float> prefill_logits;  // [vocab] logits at the last prompt position
  std::vector<int32_t> tokens;        // greedy continuation
};

// REQUIRES: prompt non-empty; the backend holds enough blocks for prompt + max_tokens.
// Ties in the argmax go to the lowest token id, as torch.argmax does.
StatusOr<ReferenceDecodeResult> reference_greedy_decode(Backend& backend, const std::vector<int32_t>& prompt,
                                                        int max_tokens);

}  // namespace tandem::backend
