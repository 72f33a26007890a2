// The plain data of a draw on the device (Backend::forward_sampled), shared by the backend interface and
// the CUDA sampling kernel (cuda/sampling.cuh), which includes only this.
#pragma once

#include <cstdint>

namespace tandem::backend {

// One token's edit of a logits row before the draw, in the engine Sampler's order:
//   x += bias; then x = -inf if masked; else x = x > 0 ? x / repetition : x * repetition (when
//   repetition != 1), then x -= subtract.
struct LogitEdit {
  int32_t token = 0;
  float bias = 0;
  float repetition = 1;
  float subtract = 0;
  int32_t masked = 0;
};

// One row's draw for Backend::forward_sampled: the engine Sampler's parameters, its edits of the row
// (penalties, logit_bias, min_tokens masks) and the row's uniform number (Sampler::uniform_for), so the
// device draws what the host sampler would.
struct RowSampling {
  float temperature = 0;  // <= 0: argmax
  float min_p = 0;
  float top_p = 1;
  int top_k = -1;
  double uniform = 0;     // in [0, 1)
  int edits_begin = 0;    // this row's edits: DeviceSamplingStep::edits[edits_begin, edits_end)
  int edits_end = 0;
  int num_logprobs = -1;  // -1: none; 0..kMaxTopLogprobs: the chosen token's and that many alternatives'
  // Constrained decoding: the row of DeviceSamplingStep::masks whose clear bits make tokens -inf after
  // the edits (the host sampler's allowed mask); -1: none.
  int mask_row = -1;
};

// The log-softmax of the edited, temperature-scaled row at the chosen token and at the num_top most
// likely tokens (logit descending, ties to the lower id), as the engine Sampler reports them.
constexpr int kMaxTopLogprobs = 20;
struct RowLogprobs {
  float chosen = 0;
  int32_t num_top = 0;
  int32_t top_ids[kMaxTopLogprobs] = {};
  float top_logprobs[kMaxTopLogprobs] = {};
};

}  // namespace tandem::backend
