// The sampling kernel against the engine's host Sampler: its ranking key, and the device draw on the same
// logits and uniform numbers. Skipped where no GPU is visible (the ranking key's test runs on the host).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/kernel_test_util.cuh"
#include "backend/cuda/sampling.cuh"
#include "backend/cuda/sampling_keys.cuh"
#include "engine/sampler.h"

namespace tandem::backend::cuda {
namespace {

// The sampling kernel's ranking key against the host sampler's comparator (logit descending, then id
// ascending) on values that trip bit tricks: signed zeros (which compare equal), infinities, subnormals,
// ties. Runs on the host: no GPU needed.
TEST(SamplingKeys, OrderLikeTheHostSamplersSort) {
  const std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, INFINITY, -INFINITY, 1e-45f, -1e-45f,
                                     3.4e38f, -3.4e38f, 1.0f, -0.0f, 0.0f};
  for (size_t a = 0; a < values.size(); ++a) {
    for (size_t b = 0; b < values.size(); ++b) {
      if (a == b) continue;
      const bool host_first = values[a] > values[b] || (values[a] == values[b] && a < b);
      EXPECT_EQ(order_key(values[a], static_cast<int>(a)) > order_key(values[b], static_cast<int>(b)), host_first)
          << values[a] << " (id " << a << ") vs " << values[b] << " (id " << b << ")";
    }
    EXPECT_EQ(id_of_key(order_key(values[a], static_cast<int>(a))), static_cast<int>(a));
  }
}

// The device draw against the engine's host Sampler on the same logits and the same uniform number:
// greedy, temperature only, and every truncation (min_p, top_k, top_p and mixes), on peaked and flat
// rows (a flat row puts most of the vocabulary into the one bucket that top_k/top_p cut, where the
// radix selection does the work) and on rows of tied logits (ties go to the lower id, as the host's
// sort); rows edited by penalties, logit_bias and min_tokens masks (Sampler::device_edits, applied on
// the device, against Sampler::sample's own processing); rows constrained by an allowed-token mask
// (structured output: RowSampling::mask_row); logprobs (chosen and top 0..20). The two must
// pick the same token on every row and report the same logprobs.
struct SamplingCase {
  int vocab;
  float spread;   // logits ~ N(0, spread)
  bool ties;      // logits rounded to multiples of 0.5
};
class DeviceSampling : public ::testing::TestWithParam<SamplingCase> {};

TEST_P(DeviceSampling, DrawsWhatTheHostSamplerDraws) {
  GPU_OR_SKIP();
  const SamplingCase c = GetParam();
  struct Params {
    float temperature, min_p, top_p;
    int top_k;
  };
  std::vector<Params> grid;
  for (float t : {0.0f, 0.7f, 1.0f, 1.6f}) {
    for (int k : {0, 1, 20, 3000}) {
      for (float p : {1.0f, 0.9f, 0.3f}) {
        for (float m : {0.0f, 0.05f}) grid.push_back({t, m, p, k});
      }
    }
  }
  const int repeats = c.vocab > 50000 ? 2 : 6;
  const int rows = static_cast<int>(grid.size()) * repeats;
  std::mt19937 rng(c.vocab + static_cast<int>(c.spread * 10) + c.ties);
  std::normal_distribution<float> dist(0.0f, c.spread);
  std::vector<float> logits(static_cast<size_t>(rows) * c.vocab);
  for (auto& x : logits) {
    x = dist(rng);
    if (c.ties) x = std::round(x * 2.0f) / 2.0f;
  }
  std::uniform_int_distribution<int32_t> token(0, c.vocab - 1);
  std::vector<RowSampling> params(rows);
  std::vector<LogitEdit> edits;
  std::vector<int32_t> want(rows);
  std::vector<engine::TokenLogprobs> want_logprobs(rows);
  engine::Sampler sampler(c.vocab, {c.vocab - 1});
  // Every fifth row is constrained (structured output): a random, a sparse or a banded allowed mask.
  const int words = (c.vocab + 31) / 32;
  std::vector<uint32_t> masks;  // [constrained rows, words]
  std::vector<uint32_t> row_mask(words);
  for (int r = 0; r < rows; ++r) {
    const Params& g = grid[r % grid.size()];
    engine::SamplingParams sp;
    sp.temperature = g.temperature;
    sp.min_p = g.min_p;
    sp.top_p = g.top_p;
    sp.top_k = g.top_k;
    sp.seed = 1000 + r;
    sp.logprobs = r % 3 == 0 ? 20 : r % 3 == 1 ? -1 : static_cast<int>(r % 6);
    // Every fourth row as it is; the others edited by penalties, bias or min_tokens masks, over
    // prompt and output tokens that repeat.
    std::vector<int32_t> prompt, output;
    for (int i = 0; i < 40; ++i) prompt.push_back(token(rng) % 64 == 0 ? 7 : token(rng));
    for (int i = 0; i < 12; ++i) output.push_back(i % 3 == 0 ? 7 : token(rng));
    const int profile = (r / 3) % 4;
    if (profile == 1) {
      sp.presence_penalty = 0.6f;
      sp.frequency_penalty = 0.3f;
    } else if (profile == 2) {
      sp.repetition_penalty = 1.3f;
      sp.logit_bias = {{token(rng), 5.0f}, {7, -2.5f}};
    } else if (profile == 3) {
      sp.min_tokens = 20;
      sp.stop_token_ids = {token(rng), 3};
      sp.repetition_penalty = 0.8f;
    }
    engine::SampleInput in;
    in.params = &sp;
    in.seed = *sp.seed;
    in.prompt_token_ids = prompt;
    in.output_token_ids = output;
    const bool constrained = r % 5 == 4;
    if (constrained) {
      const int kind = (r / 5) % 3;
      std::fill(row_mask.begin(), row_mask.end(), 0u);
      for (int t = 0; t < c.vocab; ++t) {
        const bool allowed = kind == 0 ? rng() % 10 < 3 : kind == 1 ? t % 997 == 5 || t == 7 : !(t >= 100 && t < 5000);
        if (allowed) row_mask[t >> 5] |= 1u << (t & 31);
      }
      in.allowed = row_mask;
    }
    want[r] = sampler.sample(std::span<const float>(logits.data() + static_cast<size_t>(r) * c.vocab, c.vocab), in,
                             &want_logprobs[r]);
    params[r] = engine::Sampler::device_row(in);
    if (constrained) {
      params[r].mask_row = static_cast<int>(masks.size() / words);
      masks.insert(masks.end(), row_mask.begin(), row_mask.end());
    }
    params[r].edits_begin = static_cast<int>(edits.size());
    sampler.device_edits(in, &edits);
    params[r].edits_end = static_cast<int>(edits.size());
    if (profile != 0) ASSERT_GT(params[r].edits_end, params[r].edits_begin) << "row " << r;
  }
  DeviceVec<float> d_logits(logits);
  DeviceVec<RowSampling> d_params(params);
  DeviceVec<LogitEdit> d_edits(edits);
  DeviceVec<int32_t> d_tokens(rows);
  DeviceVec<RowLogprobs> d_logprobs(rows);
  DeviceVec<uint32_t> d_masks(masks);
  CUDA_OK(launch_sample_rows(d_logits.ptr, d_params.ptr, d_edits.ptr, d_masks.ptr, d_tokens.ptr, d_logprobs.ptr, rows, c.vocab,
                             nullptr, kPlain));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<int32_t> got = d_tokens.download();
  const std::vector<RowLogprobs> got_logprobs = d_logprobs.download();
  int mismatches = 0, logprob_mismatches = 0;
  for (int r = 0; r < rows; ++r) {
    const Params& g = grid[r % grid.size()];
    if (got[r] != want[r] && ++mismatches <= 5) {
      ADD_FAILURE() << "row " << r << " T=" << g.temperature << " top_k=" << g.top_k << " top_p=" << g.top_p
                    << " min_p=" << g.min_p << " edits=" << params[r].edits_end - params[r].edits_begin << ": device "
                    << got[r] << ", host " << want[r];
    }
    if (params[r].num_logprobs < 0 || got[r] != want[r]) continue;
    const RowLogprobs& d = got_logprobs[r];
    const engine::TokenLogprobs& h = want_logprobs[r];
    // Equal values count as close too: a constrained row's masked alternatives are -inf on both sides,
    // and -inf minus -inf is NaN.
    auto close = [](float a, float b) { return a == b || std::fabs(a - b) <= 1e-3f * std::max(1.0f, std::fabs(b)); };
    bool same = close(d.chosen, h.logprob) && d.num_top == static_cast<int>(h.top.size());
    for (int j = 0; same && j < d.num_top; ++j) {
      same = d.top_ids[j] == h.top[j].token_id && close(d.top_logprobs[j], h.top[j].logprob);
    }
    if (!same && ++logprob_mismatches <= 5) {
      ADD_FAILURE() << "row " << r << " logprobs: device chosen " << d.chosen << " top " << d.num_top << " (first "
                    << (d.num_top ? d.top_ids[0] : -1) << "), host chosen " << h.logprob << " top " << h.top.size()
                    << " (first " << (h.top.empty() ? -1 : h.top[0].token_id) << ")";
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << rows << " rows";
  EXPECT_EQ(logprob_mismatches, 0) << "of " << rows << " rows";
}

INSTANTIATE_TEST_SUITE_P(Rows, DeviceSampling,
                         ::testing::Values(SamplingCase{1000, 3.0f, false}, SamplingCase{1000, 0.2f, false},
                                           SamplingCase{997, 1.0f, true}, SamplingCase{151936, 2.0f, false},
                                           SamplingCase{151936, 0.05f, false}, SamplingCase{128256, 1.0f, true}),
                         [](const auto& info) {
                           const SamplingCase& c = info.param;
                           return "Vocab" + std::to_string(c.vocab) + "Spread" + std::to_string(static_cast<int>(c.spread * 100)) +
                                  (c.ties ? "Ties" : "");
                         });

}  // namespace
}  // namespace tandem::backend::cuda
