// Sampler: greedy, processing order (bias, min_tokens, penalties), logprobs, seeded reproducibility,
// and the empirical distribution against an independent reference of temperature / min_p / top_k /
// top_p truncation, on a small vocabulary and on a Qwen-sized one.
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace tandem::engine {
namespace {

SampleInput input(const SamplingParams& p, uint64_t seed = 0, std::span<const int32_t> prompt = {},
                  std::span<const int32_t> output = {}) {
  SampleInput in;
  in.params = &p;
  in.seed = seed;
  in.prompt_token_ids = prompt;
  in.output_token_ids = output;
  return in;
}

TEST(Sampler, GreedyTakesTheArgmaxWithTiesToTheLowestId) {
  Sampler sampler(5, {});
  SamplingParams p;
  p.temperature = 0;
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(sampler.sample(logits, input(p), nullptr), 1);
}

TEST(Sampler, PlainGreedyOnlyWhenNothingChangesTheArgmaxOrNeedsTheRow) {
  Sampler sampler(8, {7});
  SamplingParams p;
  p.temperature = 0;
  EXPECT_TRUE(sampler.is_plain_greedy(input(p)));
  SamplingParams q = p;
  q.logprobs = 0;
  EXPECT_FALSE(sampler.is_plain_greedy(input(q)));
  q = p;
  q.min_tokens = 1;  // EOS must be masked for the first token
  EXPECT_FALSE(sampler.is_plain_greedy(input(q)));
  const std::vector<int32_t> one = {1};
  EXPECT_TRUE(sampler.is_plain_greedy(input(q, 0, {}, one)));
  q.ignore_eos = true;
  EXPECT_TRUE(sampler.is_plain_greedy(input(q)));
  q = p;
  q.repetition_penalty = 1.1f;
  EXPECT_FALSE(sampler.is_plain_greedy(input(q)));
  q = p;
  q.logit_bias = {{1, 1.0f}};
  EXPECT_FALSE(sampler.is_plain_greedy(input(q)));
  q = p;
  q.temperature = 0.5f;
  EXPECT_FALSE(sampler.is_plain_greedy(input(q)));
}

TEST(Sampler, LogitBiasIsAddedFirst) {
  Sampler sampler(4, {});
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{2, 5.0f}};
  EXPECT_EQ(sampler.sample(std::vector<float>{3, 1, 0, 0}, input(p), nullptr), 2);
}

TEST(Sampler, MinTokensMasksEosAndStopIdsUnlessIgnoreEos) {
  Sampler sampler(5, {4});
  SamplingParams p;
  p.temperature = 0;
  p.min_tokens = 2;
  p.stop_token_ids = {3};
  const std::vector<float> logits = {0, 1, 2, 9, 10};
  const std::vector<int32_t> one = {1};
  EXPECT_EQ(sampler.sample(logits, input(p, 0, {}, one), nullptr), 2);
  const std::vector<int32_t> two = {1, 1};
  EXPECT_EQ(sampler.sample(logits, input(p, 0, {}, two), nullptr), 4);
  p.ignore_eos = true;  // EOS is then an ordinary token and is not masked
  EXPECT_EQ(sampler.sample(logits, input(p, 0, {}, one), nullptr), 4);
}

TEST(Sampler, RepetitionPenaltyCoversPromptAndOutput) {
  Sampler sampler(4, {});
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  const std::vector<float> logits = {3.0f, 2.0f, -1.0f, -1.5f};
  const std::vector<int32_t> prompt = {0};
  EXPECT_EQ(sampler.sample(logits, input(p, 0, prompt), nullptr), 1);  // 3 / 2 < 2
  // A negative logit is multiplied: token 2 goes from -1 to -2, below token 3.
  const std::vector<float> negative = {-1.0f, -1.0f, -1.0f, -1.5f};
  const std::vector<int32_t> output = {0, 1, 2};
  EXPECT_EQ(sampler.sample(negative, input(p, 0, {}, output), nullptr), 3);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCoverOutputOnly) {
  Sampler sampler(3, {});
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.4f;
  const std::vector<float> logits = {0.0f, 3.0f, 2.5f};
  const std::vector<int32_t> prompt = {2, 2, 2, 2};
  const std::vector<int32_t> once = {1};
  EXPECT_EQ(sampler.sample(logits, input(p, 0, prompt, once), nullptr), 1);  // 3 - 0.4 > 2.5
  const std::vector<int32_t> twice = {1, 1};
  EXPECT_EQ(sampler.sample(logits, input(p, 0, prompt, twice), nullptr), 2);  // 3 - 0.8 < 2.5
  p.frequency_penalty = 0;
  p.presence_penalty = 0.6f;
  EXPECT_EQ(sampler.sample(logits, input(p, 0, prompt, once), nullptr), 2);  // 3 - 0.6 < 2.5
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfTheProcessedLogitsWithSortedAlternatives) {
  Sampler sampler(6, {});
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 1;  // truncation does not change the reported logprobs
  p.logprobs = 3;
  const std::vector<float> logits = {0.1f, 1.0f, -2.0f, 0.7f, 0.3f, 0.9f};
  TokenLogprobs lp;
  const int32_t token = sampler.sample(logits, input(p, 3), &lp);
  EXPECT_EQ(token, 1);
  double z = 0;
  for (float l : logits) z += std::exp(l / 0.5);
  auto ref = [&](int i) { return logits[i] / 0.5 - std::log(z); };
  EXPECT_EQ(lp.token_id, 1);
  EXPECT_NEAR(lp.logprob, ref(1), 1e-5);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].token_id, 1);
  EXPECT_EQ(lp.top[1].token_id, 5);
  EXPECT_EQ(lp.top[2].token_id, 3);
  EXPECT_NEAR(lp.top[2].logprob, ref(3), 1e-5);
}

TEST(Sampler, SeededDrawsDependOnlyOnSeedChoiceAndPosition) {
  EXPECT_EQ(Sampler::uniform_for(42, 0, 5), Sampler::uniform_for(42, 0, 5));
  EXPECT_NE(Sampler::uniform_for(42, 0, 5), Sampler::uniform_for(42, 0, 6));
  EXPECT_NE(Sampler::uniform_for(42, 0, 5), Sampler::uniform_for(42, 1, 5));
  EXPECT_NE(Sampler::uniform_for(42, 0, 5), Sampler::uniform_for(43, 0, 5));
  Sampler a(50, {}), b(50, {});
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(i * 1.7f);
  std::vector<float> other(50, 0.0f);
  for (int seed = 0; seed < 20; ++seed) {
    b.sample(other, input(p, 999), nullptr);  // unrelated work in between must not matter
    EXPECT_EQ(a.sample(logits, input(p, seed), nullptr), b.sample(logits, input(p, seed), nullptr));
  }
}

// Independent reference: the target distribution written the plain way (doubles, full sort).
std::vector<double> reference_probs(const std::vector<float>& logits, const SamplingParams& p) {
  const size_t v = logits.size();
  std::vector<double> x(v);
  for (size_t i = 0; i < v; ++i) x[i] = logits[i] / p.temperature;
  const double mx = *std::max_element(x.begin(), x.end());
  std::vector<double> prob(v);
  double z = 0;
  for (size_t i = 0; i < v; ++i) z += prob[i] = std::exp(x[i] - mx);
  for (double& q : prob) q /= z;
  std::vector<bool> keep(v, true);
  if (p.min_p > 0) {
    const double pmax = *std::max_element(prob.begin(), prob.end());
    for (size_t i = 0; i < v; ++i) keep[i] = prob[i] >= p.min_p * pmax;
  }
  std::vector<size_t> order(v);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] > x[b]; });
  if (p.top_k > 0) {
    int rank = 0;
    for (size_t i : order) {
      if (keep[i] && ++rank > p.top_k) keep[i] = false;
    }
  }
  if (p.top_p < 1) {
    double mass = 0;
    for (size_t i : order) mass += keep[i] ? prob[i] : 0;
    double above = 0;
    for (size_t i : order) {
      if (!keep[i]) continue;
      if (above >= p.top_p * mass) keep[i] = false;
      above += prob[i];
    }
  }
  double total = 0;
  for (size_t i = 0; i < v; ++i) total += keep[i] ? prob[i] : 0;
  std::vector<double> out(v);
  for (size_t i = 0; i < v; ++i) out[i] = keep[i] ? prob[i] / total : 0;
  return out;
}

struct DistCase {
  const char* name;
  float temperature;
  int top_k;
  float top_p;
  float min_p;
};

// 20,000 draws, each with its own seed (independent streams). The chi-square statistic over the
// tokens the reference keeps must stay below the 99.9% quantile of chi-square(df) (Wilson-Hilferty
// approximation, z = 3.09); any token the reference drops must never be drawn. The seeds are fixed,
// so the test is deterministic; a correct sampler passes for 999 in 1000 seed sets, while an error
// in a truncation rule shows up as a forbidden token or a statistic in the hundreds.
TEST(Sampler, EmpiricalDistributionMatchesTruncatedSoftmax) {
  const std::vector<DistCase> cases = {
      {"temperature", 0.7f, 0, 1.0f, 0.0f},     {"top_k", 1.3f, 5, 1.0f, 0.0f},
      {"top_p", 1.0f, 0, 0.8f, 0.0f},           {"min_p", 0.9f, 0, 1.0f, 0.1f},
      {"all", 1.1f, 8, 0.9f, 0.05f},            {"top_p_small", 2.0f, 0, 0.3f, 0.0f},
  };
  constexpr int kVocab = 24, kDraws = 20000;
  std::vector<float> logits(kVocab);
  for (int i = 0; i < kVocab; ++i) logits[i] = 2.0f * std::sin(0.9f * i) + 0.05f * i;
  Sampler sampler(kVocab, {});
  for (const DistCase& c : cases) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    const std::vector<double> expected = reference_probs(logits, p);
    std::vector<int> counts(kVocab, 0);
    for (int s = 0; s < kDraws; ++s) ++counts[sampler.sample(logits, input(p, 1000003ull * s + 17), nullptr)];
    double chi2 = 0;
    int kept = 0;
    for (int i = 0; i < kVocab; ++i) {
      if (expected[i] == 0) {
        EXPECT_EQ(counts[i], 0) << c.name << ": token " << i << " should have been truncated";
        continue;
      }
      ++kept;
      const double e = expected[i] * kDraws;
      chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    const int df = std::max(kept - 1, 1);
    const double t = 2.0 / (9.0 * df);
    const double bound = df * std::pow(1 - t + 3.09 * std::sqrt(t), 3);
    EXPECT_LT(chi2, bound) << c.name << ": chi-square " << chi2 << " with " << df << " degrees of freedom";
    EXPECT_GT(kept, 1) << c.name << ": the case should leave a real choice";
  }
}

TEST(Sampler, LargeVocabularyTopPMatchesReference) {
  // The incremental sort path (more than one 64-entry chunk) against the reference.
  constexpr int kVocab = 5000, kDraws = 4000;
  std::vector<float> logits(kVocab);
  for (int i = 0; i < kVocab; ++i) logits[i] = 0.001f * ((i * 7919) % kVocab);
  SamplingParams p;
  p.temperature = 0.2f;
  p.top_p = 0.95f;
  const std::vector<double> expected = reference_probs(logits, p);
  Sampler sampler(kVocab, {});
  for (int s = 0; s < kDraws; ++s) {
    const int32_t t = sampler.sample(logits, input(p, s), nullptr);
    ASSERT_GT(expected[t], 0) << "token " << t << " is outside the top-p set";
  }
}

// Wilson-Hilferty approximation of chi-square(df)'s quantile at normal quantile z.
double chi_square_quantile(int df, double z) {
  const double t = 2.0 / (9.0 * df);
  return df * std::pow(1 - t + z * std::sqrt(t), 3);
}

// Pearson's statistic of `counts` (over `draws` draws) against `expected` (probabilities): tokens
// expected at least kOwnBin times get a bin each; the rest are pooled in id order into about eight
// bins, so mass anywhere in the vocabulary (which block of the walk it sits in) is counted where it
// lands. A token the reference gives probability 0 must never be drawn (a failure, not a bin).
struct ChiSquare {
  double statistic = 0;
  int df = 0;
};
ChiSquare chi_square(const std::vector<double>& expected, const std::vector<int>& counts, int draws, const char* name) {
  constexpr double kOwnBin = 20;
  double pooled_total = 0;
  for (double q : expected) pooled_total += q * draws < kOwnBin ? q * draws : 0;
  const double pool_size = std::max(kOwnBin, pooled_total / 8);
  std::vector<std::pair<double, double>> bins;  // (expected count, observed count)
  double pool_e = 0, pool_o = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i] * draws;
    if (e == 0) {
      EXPECT_EQ(counts[i], 0) << name << ": token " << i << " should have been truncated";
    } else if (e >= kOwnBin) {
      bins.emplace_back(e, counts[i]);
    } else {
      pool_e += e;
      pool_o += counts[i];
      if (pool_e >= pool_size) {
        bins.emplace_back(pool_e, pool_o);
        pool_e = pool_o = 0;
      }
    }
  }
  if (pool_e > 0) {  // the short tail joins the last pooled bin (or stands alone if it is the only one)
    if (!bins.empty() && pool_e < kOwnBin) {
      bins.back().first += pool_e;
      bins.back().second += pool_o;
    } else {
      bins.emplace_back(pool_e, pool_o);
    }
  }
  ChiSquare out;
  for (const auto& [e, o] : bins) out.statistic += (o - e) * (o - e) / e;
  out.df = std::max(static_cast<int>(bins.size()) - 1, 1);
  return out;
}

// Unoptimised or sanitized builds (CI's AddressSanitizer/UBSan run is a Debug build) draw ~25x slower.
#if !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSlowBuild = true;
#else
constexpr bool kSlowBuild = false;
#endif

// A Qwen-sized vocabulary (151,936), so the untruncated draw walks the 1,024-token partial sums across
// 149 blocks and truncation works on buckets of thousands of tokens: 24 "heavy" tokens spread over the
// vocabulary (the first block to the last id) above a background of 151,912 logits in [-2, 0]. Each
// case puts a rule's boundary where it matters: temperature alone (the block walk; the background
// holds ~9% of the mass), top-p among the heavy tokens, top-k and min-p inside the background, and all
// four at once. The exact distribution comes from reference_probs (doubles, a full sort), not from the
// sampler. Caught, among others: a walk that never leaves block 0 (tokens past id 1,023 never drawn),
// always drawing the top token, and a truncation that keeps other tokens than the reference does (a
// drawn token the reference excludes fails the test).
//
// 400 draws a case (~1.2 s of CPU at -O2), fixed seeds: deterministic. A correct sampler passes with
// ~99.99% probability for any seed set (z = 3.72); those bugs give statistics in the hundreds to tens
// of thousands, or forbidden tokens. Unoptimised and sanitized builds draw 150 a case (~8 s under
// ASan at -O0), which still gives 575 against a bound of 26 for the block-0 walk, and leave out the
// top-p margin check (a property of the fixed inputs, which the optimised run checks).
TEST(Sampler, QwenSizedVocabularyMatchesTheExactDistribution) {
  constexpr int kVocab = 151936, kDraws = kSlowBuild ? 150 : 400;
  const std::vector<int32_t> heavy = {3,     1024,  6143,  13000, 20480,  31337,  40000,  47103,
                                      55555, 61440, 70001, 77777, 84000,  90111,  99999,  106496,
                                      111111, 118000, 125000, 131071, 138000, 144444, 150000, kVocab - 1};
  std::vector<float> logits(kVocab);
  std::mt19937 rng(20261202);  // mt19937's output is fixed by the standard: the same logits everywhere
  for (float& l : logits) l = -2.0f * static_cast<float>(rng() >> 8) / 16777216.0f;
  for (size_t j = 0; j < heavy.size(); ++j) logits[heavy[j]] = 8.0f - 0.15f * static_cast<float>((j * 7) % heavy.size());

  const std::vector<DistCase> cases = {
      {"temperature", 0.7f, 0, 1.0f, 0.0f},   {"top_p", 0.7f, 0, 0.6f, 0.0f},    {"top_k", 1.3f, 3000, 1.0f, 0.0f},
      {"min_p", 1.0f, 0, 1.0f, 3.2e-4f},      {"all", 0.9f, 20, 0.8f, 0.02f},
  };
  Sampler sampler(kVocab, {});
  for (const DistCase& c : cases) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    const std::vector<double> expected = reference_probs(logits, p);
    if (c.top_p < 1.0f && !kSlowBuild) {
      // The top-p boundary must not sit on a token's edge, where float rounding in the sampler could
      // legitimately flip it: a slightly different top_p keeps the same set.
      for (float nudge : {-1e-4f, 1e-4f}) {
        SamplingParams q = p;
        q.top_p += nudge;
        const std::vector<double> nudged = reference_probs(logits, q);
        for (int i = 0; i < kVocab; ++i) ASSERT_EQ(nudged[i] > 0, expected[i] > 0) << c.name << ": boundary too close, token " << i;
      }
    }
    int kept = 0, kept_past_block0 = 0;
    for (int i = 0; i < kVocab; ++i) {
      kept += expected[i] > 0;
      kept_past_block0 += expected[i] > 0 && i >= 1024;
    }
    EXPECT_GT(kept_past_block0, 1) << c.name << ": the case should keep tokens past the first block";
    std::vector<int> counts(kVocab, 0);
    for (int s = 0; s < kDraws; ++s) ++counts[sampler.sample(logits, input(p, 7919ull * s + 5), nullptr)];
    const ChiSquare chi = chi_square(expected, counts, kDraws, c.name);
    EXPECT_GE(chi.df, 4) << c.name << ": too few bins to see a wrong distribution";
    EXPECT_LT(chi.statistic, chi_square_quantile(chi.df, 3.72))
        << c.name << ": chi-square " << chi.statistic << " with " << chi.df << " degrees of freedom (" << kept << " tokens kept)";
  }
}

}  // namespace
}  // namespace tandem::engine
