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

#include "backend/device_sampling.h"
#include "engine/request.h"

namespace tandem::engine {

struct SampleInput {
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;  // the request's seed (or one drawn at submit when it has none)
  int choice_index = 0;
  std::span<const int32_t> prompt_token_ids;
  std::span<const int32_t> output_token_ids;  // generated so far (their count is the draw's position)
  // Constrained decoding (engine/constraint.h): [ceil(vocab / 32)] words, bit t set = token t may be
  // drawn; every other logit becomes -inf after logit_bias. Empty = no constraint.
  std::span<const uint32_t> allowed;
  // The constraint allows only ending (EOS): min_tokens then does not mask EOS, which would leave nothing.
  bool allowed_only_end = false;
};

class Sampler {
 public:
  Sampler(int vocab_size, std::vector<int> eos_token_ids);

  // Samples from `logits` ([vocab_size] fp32, host; not modified). When in.params->logprobs >= 0 fills
  // `logprobs` with the chosen token's logprob and the top params->logprobs alternatives.
  int32_t sample(std::span<const float> logits, const SampleInput& in, TokenLogprobs* logprobs);

  // The per-draw random stream (exposed for tests): uniform in [0, 1) with 53 bits.
  static double uniform_for(uint64_t seed, int choice_index, int position);

  // True when sample() would return the plain argmax of the row (greedy, nothing modifies the logits,
  // no logprobs): the engine can then ask the backend for argmax tokens instead of whole rows.
  bool is_plain_greedy(const SampleInput& in) const;
  // True when sample() would draw from the row as it is (no logit_bias, penalties or min_tokens
  // masks) and want no logprobs.
  bool draws_from_unedited_row(const SampleInput& in) const;

  // Appends the edits sample() makes to the row before drawing (logit_bias, min_tokens masks,
  // repetition, frequency and presence penalties), one per edited token, for a backend that draws on its
  // device (Backend::forward_sampled): applied as backend::LogitEdit says, they give the row process()
  // gives, so the device draws with the same temperature, min_p, top_k, top_p and uniform_for() number.
  void device_edits(const SampleInput& in, std::vector<backend::LogitEdit>* out);
  // The rest of that row's device draw: in's parameters and its uniform_for() number (edits_begin/end
  // left for the caller, who places device_edits()' output).
  static backend::RowSampling device_row(const SampleInput& in);

 private:
  void process(const SampleInput& in);
  int32_t draw(const SamplingParams& p, double u);
  int32_t draw_untruncated(double u, double total);
  void gather_bucket(int bucket, std::vector<std::pair<float, int32_t>>* out) const;
  void fill_logprobs(int32_t chosen, int num_top, TokenLogprobs* out);

  // Truncation works on a histogram of the logits' distance below the maximum (kBucketsPerUnit buckets
  // per logit unit, the last one open-ended), so only the one bucket that straddles a top-k or top-p
  // boundary is ever sorted: linear time on a 150k vocabulary instead of a full sort.
  static constexpr int kBucketsPerUnit = 16;
  static constexpr int kNumBuckets = 32 * kBucketsPerUnit;
  static constexpr uint16_t kExcluded = 0xffff;
  static constexpr int kBlock = 1024;  // tokens per partial sum for the inverse-CDF walk

  const int vocab_size_;
  const std::vector<int> eos_token_ids_;
  std::vector<float> work_;                        // [vocab] processed logits of the current row
  std::vector<float> probs_;                       // [vocab] exp(work_ - max), unnormalised
  std::vector<uint16_t> bucket_;                   // [vocab] histogram bucket, kExcluded if dropped
  std::vector<double> block_sums_;                 // [ceil(vocab / kBlock)] partial sums of probs_
  std::vector<int32_t> counts_;                    // [vocab] output-token counts, zeroed after each use
  std::vector<uint8_t> seen_;                      // [vocab] prompt+output membership, zeroed after use
  std::vector<int32_t> edit_slot_;                 // [vocab] device_edits: index of a token's edit, -1 after use
  std::vector<int32_t> bucket_count_;              // [kNumBuckets]
  std::vector<double> bucket_mass_;                // [kNumBuckets]
  std::vector<std::pair<float, int32_t>> partial_; // kept tokens of the straddling bucket, best first
  std::vector<int32_t> cand_;                      // ids of the kept tokens, in draw order
  float max_logit_ = 0;
};

}  // namespace tandem::engine
