#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <queue>

#include "common/error.h"

namespace tandem::engine {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

bool by_logit_desc(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// exp(x) for x <= 0, vectorisable (no calls, no branches): 2^n * e^r with n = round(x / ln 2) and
// |r| <= ln2 / 2 (Cody-Waite split of ln 2), e^r by its Taylor series to r^7 (relative error < 2e-8,
// below float rounding). Inputs below -87 (including -inf) give exactly 0.
inline float exp_nonpositive(float x) {
  const float clamped = x > -87.0f ? x : -87.0f;
  const float t = clamped * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
  const float r = (clamped - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<int32_t>(n + 127.0f) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}

float max_of(const float* x, int n) {
  float m = kNegInf;
#pragma omp simd reduction(max : m)
  for (int i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace

Sampler::Sampler(int vocab_size, std::vector<int> eos_token_ids)
    : vocab_size_(vocab_size),
      eos_token_ids_(std::move(eos_token_ids)),
      work_(vocab_size),
      probs_(vocab_size),
      bucket_(vocab_size),
      block_sums_((vocab_size + kBlock - 1) / kBlock),
      counts_(vocab_size, 0),
      seen_(vocab_size, 0),
      edit_slot_(vocab_size, -1),
      bucket_count_(kNumBuckets),
      bucket_mass_(kNumBuckets) {
  cand_.reserve(vocab_size);
}

double Sampler::uniform_for(uint64_t seed, int choice_index, int position) {
  uint64_t k = mix64(seed);
  k = mix64(k ^ (static_cast<uint64_t>(choice_index) * 0xd1b54a32d192ed03ull));
  k = mix64(k ^ (static_cast<uint64_t>(position) * 0xaf251af3b0f025b5ull));
  return static_cast<double>(k >> 11) * (1.0 / 9007199254740992.0);
}

void Sampler::process(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  for (const auto& [id, bias] : p.logit_bias) {
    if (id >= 0 && id < vocab_size_) work_[id] += bias;
  }
  if (!in.allowed.empty()) {
    const int num_words = std::min(static_cast<int>(in.allowed.size()), (vocab_size_ + 31) / 32);
    for (int w = 0; w < num_words; ++w) {
      const uint32_t bits = in.allowed[w];
      if (bits == 0xffffffffu) continue;
      const int base = w * 32, end = std::min(vocab_size_, base + 32);
      for (int t = base; t < end; ++t) {
        if (!(bits >> (t - base) & 1u)) work_[t] = kNegInf;
      }
    }
    for (int t = num_words * 32; t < vocab_size_; ++t) work_[t] = kNegInf;
  }
  if (static_cast<int>(in.output_token_ids.size()) < p.min_tokens && !in.allowed_only_end) {
    for (int32_t id : p.stop_token_ids) {
      if (id >= 0 && id < vocab_size_) work_[id] = kNegInf;
    }
    if (!p.ignore_eos) {
      for (int id : eos_token_ids_) {
        if (id >= 0 && id < vocab_size_) work_[id] = kNegInf;
      }
    }
  }
  if (p.repetition_penalty != 1.0f) {
    const float r = p.repetition_penalty;
    auto apply = [&](int32_t t) {
      if (seen_[t]) return;
      seen_[t] = 1;
      work_[t] = work_[t] > 0 ? work_[t] / r : work_[t] * r;
    };
    for (int32_t t : in.prompt_token_ids) apply(t);
    for (int32_t t : in.output_token_ids) apply(t);
    for (int32_t t : in.prompt_token_ids) seen_[t] = 0;
    for (int32_t t : in.output_token_ids) seen_[t] = 0;
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (int32_t t : in.output_token_ids) ++counts_[t];
    for (int32_t t : in.output_token_ids) {
      if (counts_[t] == 0) continue;  // applied already
      work_[t] -= p.frequency_penalty * static_cast<float>(counts_[t]) + p.presence_penalty;
      counts_[t] = 0;
    }
  }
  float* w = work_.data();
  const int n = vocab_size_;
  if (p.temperature > 0.0f && p.temperature != 1.0f) {
    const float inv = 1.0f / p.temperature;
    float m = kNegInf;
#pragma omp simd reduction(max : m)
    for (int i = 0; i < n; ++i) {
      w[i] *= inv;
      m = w[i] > m ? w[i] : m;
    }
    max_logit_ = m;
  } else {
    max_logit_ = max_of(w, n);
  }
}

int32_t Sampler::draw_untruncated(double u, double total) {
  const double target = u * total;
  double cum = 0;
  const int num_blocks = static_cast<int>(block_sums_.size());
  int b = 0;
  while (b < num_blocks - 1 && cum + block_sums_[b] <= target) cum += block_sums_[b++];
  const int end = std::min(vocab_size_, (b + 1) * kBlock);
  int32_t last_possible = -1;
  for (int i = b * kBlock; i < end; ++i) {
    if (probs_[i] == 0.0f) continue;
    cum += probs_[i];
    last_possible = i;
    if (cum > target) return i;
  }
  if (last_possible >= 0) return last_possible;  // rounding left the target just past this block
  for (int i = vocab_size_; i-- > 0;) {
    if (probs_[i] > 0.0f) return i;
  }
  return 0;
}

void Sampler::gather_bucket(int bucket, std::vector<std::pair<float, int32_t>>* out) const {
  out->clear();
  for (int32_t i = 0; i < vocab_size_; ++i) {
    if (bucket_[i] == bucket) out->emplace_back(work_[i], i);
  }
  std::sort(out->begin(), out->end(), by_logit_desc);
}

int32_t Sampler::draw(const SamplingParams& p, double u) {
  const int n = vocab_size_;
  const float m = max_logit_;
  const float* w = work_.data();
  float* pr = probs_.data();
  double total = 0;
  for (size_t b = 0; b < block_sums_.size(); ++b) {
    const int begin = static_cast<int>(b) * kBlock, end = std::min(n, begin + kBlock);
    float s = 0;  // <= 1024 terms in (0, 1]: float is exact enough, and the blocks add in double
#pragma omp simd reduction(+ : s)
    for (int i = begin; i < end; ++i) {
      pr[i] = exp_nonpositive(w[i] - m);  // p_i / p_max
      s += pr[i];
    }
    block_sums_[b] = s;
    total += s;
  }

  const bool top_k_on = p.top_k > 0 && p.top_k < n;
  if (p.min_p <= 0.0f && !top_k_on && p.top_p >= 1.0f) return draw_untruncated(u, total);

  // Histogram of the tokens that survive min_p (p >= min_p * p_max), by distance below the maximum.
  const float min_rel = p.min_p > 0.0f ? p.min_p : 0.0f;
  std::fill(bucket_count_.begin(), bucket_count_.end(), 0);
  std::fill(bucket_mass_.begin(), bucket_mass_.end(), 0.0);
  uint16_t* bk = bucket_.data();
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    const float scaled = (m - w[i]) * kBucketsPerUnit;
    const float d = scaled < kNumBuckets - 1 ? scaled : static_cast<float>(kNumBuckets - 1);
    bk[i] = (pr[i] > 0.0f && pr[i] >= min_rel) ? static_cast<uint16_t>(d) : kExcluded;
  }
  int kept = 0;
  for (int i = 0; i < n; ++i) {
    if (bk[i] == kExcluded) continue;
    ++bucket_count_[bk[i]];
    bucket_mass_[bk[i]] += pr[i];
    ++kept;
  }

  // Kept set = every token in buckets [0, full_end) plus partial_ (tokens of bucket full_end, best first).
  int full_end = kNumBuckets;
  partial_.clear();
  bool has_partial = false;
  if (top_k_on && kept > p.top_k) {
    int cum = 0, b = 0;
    while (cum + bucket_count_[b] < p.top_k) cum += bucket_count_[b++];
    full_end = b;
    gather_bucket(b, &partial_);
    partial_.resize(p.top_k - cum);
    has_partial = true;
  }
  if (p.top_p < 1.0f) {
    // Keep a token iff the probability of the kept tokens ranked above it is below top_p: the
    // smallest set whose mass reaches top_p.
    double kept_mass = 0;
    for (int b = 0; b < full_end; ++b) kept_mass += bucket_mass_[b];
    for (const auto& [x, id] : partial_) kept_mass += pr[id];
    const double limit = static_cast<double>(p.top_p) * kept_mass;
    double above = 0;
    int b = 0;
    while (b < full_end && above + bucket_mass_[b] < limit) above += bucket_mass_[b++];
    if (b < full_end) {  // the boundary falls inside bucket b
      gather_bucket(b, &partial_);
      full_end = b;
      has_partial = true;
    }
    size_t keep = 0;
    while (keep < partial_.size() && above < limit) above += pr[partial_[keep++].second];
    partial_.resize(std::max<size_t>(keep, full_end == 0 ? 1 : 0));
  }

  cand_.clear();
  for (int32_t i = 0; i < n; ++i) {
    if (bk[i] < full_end) cand_.push_back(i);
  }
  if (has_partial) {
    for (const auto& [x, id] : partial_) cand_.push_back(id);
  }
  double cand_mass = 0;
  for (int32_t id : cand_) cand_mass += pr[id];
  const double target = u * cand_mass;
  double cum = 0;
  for (int32_t id : cand_) {
    cum += pr[id];
    if (cum > target) return id;
  }
  return cand_.back();
}

void Sampler::fill_logprobs(int32_t chosen, int num_top, TokenLogprobs* out) {
  const float m = max_logit_;
  const float* w = work_.data();
  const int n = vocab_size_;
  double total = 0;
#pragma omp simd reduction(+ : total)
  for (int i = 0; i < n; ++i) total += exp_nonpositive(w[i] - m);
  const float lse = m + static_cast<float>(std::log(total));
  out->token_id = chosen;
  out->logprob = w[chosen] - lse;
  out->top.clear();
  if (num_top <= 0) return;
  // Min-heap of the num_top best (logit, id); most tokens fail the one comparison with its top.
  using Entry = std::pair<float, int32_t>;
  auto worse = [](const Entry& a, const Entry& b) { return by_logit_desc(a, b); };
  std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> heap(worse);
  for (int32_t i = 0; i < n; ++i) {
    if (static_cast<int>(heap.size()) < num_top) {
      heap.emplace(w[i], i);
    } else if (w[i] > heap.top().first || (w[i] == heap.top().first && i < heap.top().second)) {
      heap.pop();
      heap.emplace(w[i], i);
    }
  }
  out->top.resize(heap.size());
  for (size_t j = heap.size(); j-- > 0;) {
    out->top[j] = {heap.top().second, heap.top().first - lse};
    heap.pop();
  }
}

namespace {

// First index holding the maximum: ties go to the lowest id, as torch.argmax.
int32_t argmax_first(const float* x, int n, float max_value) {
  int32_t i = 0;
  while (i < n - 1 && x[i] != max_value) ++i;
  return i;
}

}  // namespace

bool Sampler::draws_from_unedited_row(const SampleInput& in) const {
  const SamplingParams& p = *in.params;
  const bool masks_stops = static_cast<int>(in.output_token_ids.size()) < p.min_tokens &&
                           (!p.stop_token_ids.empty() || (!p.ignore_eos && !eos_token_ids_.empty()));
  return p.logprobs < 0 && !masks_stops && in.allowed.empty() && p.logit_bias.empty() && p.repetition_penalty == 1.0f &&
         p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f;
}

void Sampler::device_edits(const SampleInput& in, std::vector<backend::LogitEdit>* out) {
  const SamplingParams& p = *in.params;
  const size_t first = out->size();
  auto edit = [&](int32_t t) -> backend::LogitEdit& {
    int32_t& slot = edit_slot_[t];
    if (slot < 0) {
      slot = static_cast<int32_t>(out->size() - first);
      backend::LogitEdit e;
      e.token = t;
      out->push_back(e);
    }
    return (*out)[first + slot];
  };
  for (const auto& [id, bias] : p.logit_bias) {
    if (id >= 0 && id < vocab_size_) edit(id).bias += bias;
  }
  // The allowed mask of a constrained row is not an edit: it travels as RowSampling::mask_row.
  if (static_cast<int>(in.output_token_ids.size()) < p.min_tokens && !in.allowed_only_end) {
    for (int32_t id : p.stop_token_ids) {
      if (id >= 0 && id < vocab_size_) edit(id).masked = 1;
    }
    if (!p.ignore_eos) {
      for (int id : eos_token_ids_) {
        if (id >= 0 && id < vocab_size_) edit(id).masked = 1;
      }
    }
  }
  if (p.repetition_penalty != 1.0f) {
    for (int32_t t : in.prompt_token_ids) edit(t).repetition = p.repetition_penalty;
    for (int32_t t : in.output_token_ids) edit(t).repetition = p.repetition_penalty;
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    for (int32_t t : in.output_token_ids) ++counts_[t];
    for (int32_t t : in.output_token_ids) {
      if (counts_[t] == 0) continue;  // done already
      edit(t).subtract = p.frequency_penalty * static_cast<float>(counts_[t]) + p.presence_penalty;
      counts_[t] = 0;
    }
  }
  for (size_t e = first; e < out->size(); ++e) edit_slot_[(*out)[e].token] = -1;
}

backend::RowSampling Sampler::device_row(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  backend::RowSampling row;
  row.temperature = p.temperature;
  row.min_p = p.min_p;
  row.top_p = p.top_p;
  row.top_k = p.top_k;
  row.num_logprobs = p.logprobs;
  row.uniform = uniform_for(in.seed, in.choice_index, static_cast<int>(in.output_token_ids.size()));
  return row;
}

bool Sampler::is_plain_greedy(const SampleInput& in) const { return in.params->temperature <= 0.0f && draws_from_unedited_row(in); }

int32_t Sampler::sample(std::span<const float> logits, const SampleInput& in, TokenLogprobs* logprobs) {
  TANDEM_CHECK(static_cast<int>(logits.size()) == vocab_size_);
  const SamplingParams& p = *in.params;
  const bool want_logprobs = logprobs != nullptr && p.logprobs >= 0;
  if (is_plain_greedy(in)) {
    // Plain greedy: nothing modifies the row, so skip the copy.
    return argmax_first(logits.data(), vocab_size_, max_of(logits.data(), vocab_size_));
  }
  std::memcpy(work_.data(), logits.data(), sizeof(float) * vocab_size_);
  process(in);
  int32_t chosen;
  if (p.temperature <= 0.0f) {
    chosen = argmax_first(work_.data(), vocab_size_, max_logit_);
  } else {
    chosen = draw(p, uniform_for(in.seed, in.choice_index, static_cast<int>(in.output_token_ids.size())));
  }
  if (want_logprobs) fill_logprobs(chosen, p.logprobs, logprobs);
  return chosen;
}

}  // namespace tandem::engine
