#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
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

}  // namespace

Sampler::Sampler(int vocab_size, std::vector<int> eos_token_ids)
    : vocab_size_(vocab_size),
      eos_token_ids_(std::move(eos_token_ids)),
      work_(vocab_size),
      counts_(vocab_size, 0),
      seen_(vocab_size, 0) {
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
  if (static_cast<int>(in.output_token_ids.size()) < p.min_tokens) {
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
  if (p.temperature > 0.0f && p.temperature != 1.0f) {
    const float inv = 1.0f / p.temperature;
    for (float& x : work_) x *= inv;
  }
}

int32_t Sampler::draw(const SamplingParams& p, double u) {
  const float max_logit = *std::max_element(work_.begin(), work_.end());
  const bool top_k_on = p.top_k > 0 && p.top_k < vocab_size_;
  if (p.min_p <= 0.0f && !top_k_on && p.top_p >= 1.0f) {
    double total = 0;
    for (float x : work_) total += std::exp(static_cast<double>(x - max_logit));
    const double target = u * total;
    double cum = 0;
    int32_t last_possible = 0;
    for (int32_t i = 0; i < vocab_size_; ++i) {
      if (work_[i] == kNegInf) continue;
      cum += std::exp(static_cast<double>(work_[i] - max_logit));
      last_possible = i;
      if (cum > target) return i;
    }
    return last_possible;  // rounding left target at the very top
  }

  const float threshold = p.min_p > 0.0f ? max_logit + std::log(p.min_p) : kNegInf;
  cand_.clear();
  for (int32_t i = 0; i < vocab_size_; ++i) {
    if (work_[i] >= threshold && work_[i] != kNegInf) cand_.emplace_back(work_[i], i);
  }
  size_t keep = cand_.size();
  if (top_k_on && static_cast<size_t>(p.top_k) < keep) {
    std::nth_element(cand_.begin(), cand_.begin() + p.top_k, cand_.end(), by_logit_desc);
    keep = p.top_k;
  }
  if (p.top_p < 1.0f) {
    // Keep a token iff the probability of the tokens ranked above it is below top_p (the smallest set
    // whose mass reaches top_p). Sort only as far as needed: growing chunks from the top.
    double total = 0;
    for (size_t j = 0; j < keep; ++j) total += std::exp(static_cast<double>(cand_[j].first - max_logit));
    const double limit = static_cast<double>(p.top_p) * total;
    double above = 0;
    size_t sorted = 0, chunk = 64;
    size_t cut = keep;
    while (cut == keep && sorted < keep) {
      const size_t end = std::min(keep, sorted + chunk);
      if (end < keep) std::nth_element(cand_.begin() + sorted, cand_.begin() + end, cand_.begin() + keep, by_logit_desc);
      std::sort(cand_.begin() + sorted, cand_.begin() + end, by_logit_desc);
      for (size_t j = sorted; j < end; ++j) {
        if (above >= limit) {
          cut = j;
          break;
        }
        above += std::exp(static_cast<double>(cand_[j].first - max_logit));
      }
      sorted = end;
      chunk *= 4;
    }
    keep = std::max<size_t>(cut, 1);
  }
  double total = 0;
  for (size_t j = 0; j < keep; ++j) total += std::exp(static_cast<double>(cand_[j].first - max_logit));
  const double target = u * total;
  double cum = 0;
  for (size_t j = 0; j < keep; ++j) {
    cum += std::exp(static_cast<double>(cand_[j].first - max_logit));
    if (cum > target) return cand_[j].second;
  }
  return cand_[keep - 1].second;
}

void Sampler::fill_logprobs(int32_t chosen, int num_top, TokenLogprobs* out) const {
  const float max_logit = *std::max_element(work_.begin(), work_.end());
  double total = 0;
  for (float x : work_) total += std::exp(static_cast<double>(x - max_logit));
  const float lse = max_logit + static_cast<float>(std::log(total));
  out->token_id = chosen;
  out->logprob = work_[chosen] - lse;
  out->top.clear();
  if (num_top <= 0) return;
  // Min-heap of the num_top best (logit, -id): O(vocab log num_top).
  using Entry = std::pair<float, int32_t>;
  auto worse = [](const Entry& a, const Entry& b) { return by_logit_desc(a, b); };
  std::priority_queue<Entry, std::vector<Entry>, decltype(worse)> heap(worse);
  for (int32_t i = 0; i < vocab_size_; ++i) {
    if (static_cast<int>(heap.size()) < num_top) {
      heap.emplace(work_[i], i);
    } else if (by_logit_desc({work_[i], i}, heap.top())) {
      heap.pop();
      heap.emplace(work_[i], i);
    }
  }
  out->top.resize(heap.size());
  for (size_t j = heap.size(); j-- > 0;) {
    out->top[j] = {heap.top().second, heap.top().first - lse};
    heap.pop();
  }
}

int32_t Sampler::sample(std::span<const float> logits, const SampleInput& in, TokenLogprobs* logprobs) {
  TANDEM_CHECK(static_cast<int>(logits.size()) == vocab_size_);
  std::copy(logits.begin(), logits.end(), work_.begin());
  process(in);
  const SamplingParams& p = *in.params;
  int32_t chosen;
  if (p.temperature <= 0.0f) {
    chosen = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());  // first max
  } else {
    chosen = draw(p, uniform_for(in.seed, in.choice_index, static_cast<int>(in.output_token_ids.size())));
  }
  if (logprobs != nullptr && p.logprobs >= 0) fill_logprobs(chosen, p.logprobs, logprobs);
  return chosen;
}

}  // namespace tandem::engine
