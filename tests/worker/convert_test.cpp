// convert.h: sampling parameters survive the trip through the request plane's message.
#include "worker/convert.h"

#include <gtest/gtest.h>

namespace tandem::worker {
namespace {

TEST(Convert, SamplingParams_RoundTripKeepsEveryField) {
  engine::SamplingParams s;
  s.temperature = 0.7f;
  s.top_p = 0.9f;
  s.top_k = 40;
  s.min_p = 0.05f;
  s.seed = 1234;
  s.presence_penalty = 0.5f;
  s.frequency_penalty = -0.25f;
  s.repetition_penalty = 1.1f;
  s.logit_bias = {{5, 2.0f}, {9, -100.0f}};
  s.max_tokens = 77;
  s.min_tokens = 3;
  s.stop_token_ids = {2, 151645};
  s.stop = {"\n\n", "END"};
  s.ignore_eos = true;
  s.logprobs = 4;
  s.n = 3;
  s.skip_special_tokens = false;
  s.guided = R"({"regex": "a+"})";

  rpc::pb::SamplingParams p;
  to_proto(s, &p);
  const engine::SamplingParams back = from_proto(p);
  EXPECT_EQ(back.temperature, s.temperature);
  EXPECT_EQ(back.top_p, s.top_p);
  EXPECT_EQ(back.top_k, s.top_k);
  EXPECT_EQ(back.min_p, s.min_p);
  EXPECT_EQ(back.seed, s.seed);
  EXPECT_EQ(back.presence_penalty, s.presence_penalty);
  EXPECT_EQ(back.frequency_penalty, s.frequency_penalty);
  EXPECT_EQ(back.repetition_penalty, s.repetition_penalty);
  EXPECT_EQ(back.logit_bias, s.logit_bias);
  EXPECT_EQ(back.max_tokens, s.max_tokens);
  EXPECT_EQ(back.min_tokens, s.min_tokens);
  EXPECT_EQ(back.stop_token_ids, s.stop_token_ids);
  EXPECT_EQ(back.stop, s.stop);
  EXPECT_EQ(back.ignore_eos, s.ignore_eos);
  EXPECT_EQ(back.logprobs, s.logprobs);
  EXPECT_EQ(back.n, s.n);
  EXPECT_EQ(back.skip_special_tokens, s.skip_special_tokens);
  EXPECT_EQ(back.guided, s.guided);
}

TEST(Convert, SamplingParams_NoSeedStaysUnset) {
  engine::SamplingParams s;
  rpc::pb::SamplingParams p;
  to_proto(s, &p);
  EXPECT_FALSE(p.has_seed());
  EXPECT_FALSE(from_proto(p).seed.has_value());
}

}  // namespace
}  // namespace tandem::worker
