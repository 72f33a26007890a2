// Sampler: turns one row of host logits into the next token of one sequence, with vLLM's semantics and
// order of processing:
//   1. logit_bias added; while fewer than min_tokens have been generated, EOS (unless ignore_eos) and
//      stop_token_ids are masked to -inf;
//   2. penalties: repetition over prompt + output (a positive logit is divided by the penalty, a
//      negative one multiplied), frequency (times the count in the output) and presence (once per
//      token present in the output) subtracted;
//   3. temperature == 0: argmax (ties to the lowest id, as torch.argmax). Otherwise divide by the
//      temperature, keep tokens with p >= min_p * p_max, then the top_k largest, then the smallest set
//      whose probability reaches top_p (renormalised after top_k), and draw by inverse CDF.
// Logprobs are the log-softmax of the logits after step 2 and the temperature division (before min_p /
// top_k / top_p truncation) — vLLM's "processed" logprobs without the truncation, so a chosen token
// always has a finite logprob.
//
// Reproducibility: each draw uses its own SplitMix64 stream keyed by (seed, choice index, output
// position), so a seeded request samples the same tokens whatever else shares the batch or step.
//
// Thread-safety: a Sampler holds scratch buffers; one per thread (the engine loop owns one).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"

namespace tandem::engine {

struct SampleInput {
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;  // the request's seed (or one drawn at submit when it has none)
  int choice_index = 0;
  std::span<const int32_t> prompt_token_ids;
  std::span<const int32_t> output_token_ids;  // generated so far (their count is the draw's position)
};

class Sampler {
 public:
  Sampler(int vocab_size, std::vector<int> eos_token_ids);

  // Samples from `logits` ([vocab_size] fp32, host; not modified). When in.params->logprobs >= 0 fills
  // `logprobs` with the chosen token's logprob and the top params->logprobs alternatives.
  int32_t sample(std::span<const float> logits, const SampleInput& in, TokenLogprobs* logprobs);

  // The per-draw random stream (exposed for tests): uniform in [0, 1) with 53 bits.
  static double uniform_for(uint64_t seed, int choice_index, int position);

 private:
  void process(const SampleInput& in);
  int32_t draw(const SamplingParams& p, double u);
  void fill_logprobs(int32_t chosen, int num_top, TokenLogprobs* out) const;

  const int vocab_size_;
  const std::vector<int> eos_token_ids_;
  std::vector<float> work_;                        // [vocab] processed logits of the current row
  std::vector<int32_t> counts_;                    // [vocab] output-token counts, zeroed after each use
  std::vector<uint8_t> seen_;                      // [vocab] prompt+output membership, zeroed after use
  std::vector<std::pair<float, int32_t>> cand_;    // candidates (logit, id) surviving truncation
};

}  // namespace tandem::engine
