// The CPU backend on FP8 checkpoints against transformers (issue 18): for every fixture made by
// tools/references/make_fp8_references.py (block FP8 that transformers loads itself; compressed-tensors
// channel and tensor/static), greedy tokens equal and last-position logits match within 1e-4 relative
// those of transformers in fp32 on the dequantized weights. Registered only when the fixtures exist
// (tests/backend/CMakeLists.txt).
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "backend/reference_decode.h"
#include "model/weight_source.h"
#include "testing/reference_fixtures.h"

namespace tandem::backend {
namespace {

class Fp8TransformersReference : public ::testing::TestWithParam<std::pair<std::string, model::Fp8Scheme>> {};

TEST_P(Fp8TransformersReference, GreedyTokensAndLogitsMatch) {
  const auto& [name, scheme] = GetParam();
  auto weights = model::open_weight_source(std::string(TANDEM_TEST_DATA_DIR) + "/models/" + name);
  ASSERT_TRUE(weights->config().quantization.is_fp8());
  EXPECT_EQ(weights->config().quantization.weight_scheme, scheme);
  BackendOptions options;
  options.num_kv_blocks = 8;
  auto backend = create_backend(*weights, options);
  auto references = tandem::testing::load_references(name);
  ASSERT_EQ(references.size(), 4u);
  for (const auto& ref : references) {
    auto result = reference_greedy_decode(*backend, ref.ids, static_cast<int>(ref.greedy.size()));
    ASSERT_TRUE(result.ok()) << result.status().to_string();
    EXPECT_LT(tandem::testing::relative_error(result->prefill_logits, ref.last_logits), 1e-4)
        << name << " prompt of " << ref.ids.size();
    EXPECT_EQ(result->tokens, ref.greedy) << name << " prompt of " << ref.ids.size();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Fp8TransformersReference,
                         ::testing::Values(std::pair{std::string("llama_fp8_block"), model::Fp8Scheme::kBlock},
                                           std::pair{std::string("qwen3_fp8_channel_tied"), model::Fp8Scheme::kChannel},
                                           std::pair{std::string("llama_fp8_tensor_static"), model::Fp8Scheme::kTensor}),
                         [](const auto& info) { return info.param.first; });

}  // namespace
}  // namespace tandem::backend
