// The CPU backend on FP8 weights (issue 18): an FP8 checkpoint (both formats) computes exactly what the
// same model written as fp32 from its dequantized weights computes; --quantization fp8 on a bf16
// checkpoint equals that checkpoint quantized per channel on disk; --quantization none on an FP8
// checkpoint is refused with a clear message (on any device).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "backend/backend.h"
#include "backend/reference_decode.h"
#include "common/error.h"
#include "model/checkpoint.h"
#include "model/presets.h"
#include "model/random_weights.h"
#include "model/safetensors_writer.h"

namespace tandem::backend {
namespace {
namespace fs = std::filesystem;
using model::QuantizationConfig;

model::ModelConfig small_llama() {
  model::ModelConfig c = model::preset_config("tiny-llama");
  c.vocab_size = 512;
  c.hidden_size = 160;  // partial 128-blocks
  c.num_heads = 5;
  c.num_kv_heads = 1;
  c.head_dim = 32;
  c.intermediate_size = 200;
  return c;
}

QuantizationConfig fp8(QuantizationConfig::Method method, model::Fp8Scheme scheme) {
  QuantizationConfig q;
  q.method = method;
  q.weight_scheme = scheme;
  q.unquantized_modules = {"lm_head"};
  return q;
}

class Fp8Backend : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tandem_fp8_backend_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static ReferenceDecodeResult decode(const model::WeightSource& weights, const std::string& quantization = "") {
    BackendOptions options;
    options.num_kv_blocks = 8;
    options.quantization = quantization;
    auto backend = create_backend(weights, options);
    auto result = reference_greedy_decode(*backend, {3, 141, 59, 26, 5, 35}, 24);
    EXPECT_TRUE(result.ok()) << result.status().to_string();
    return result.ok() ? *result : ReferenceDecodeResult{};
  }

  fs::path root_;
};

TEST_F(Fp8Backend, GreedyEqualsTheFp32CopyOfTheDequantizedWeights) {
  const model::RandomWeights random(small_llama(), 11, "random:small");
  const ReferenceDecodeResult unquantized = decode(random);
  for (const auto& [name, method, scheme] :
       {std::tuple{"block", QuantizationConfig::Method::kFp8Block, model::Fp8Scheme::kBlock},
        std::tuple{"channel", QuantizationConfig::Method::kCompressedTensors, model::Fp8Scheme::kChannel}}) {
    const fs::path fp8_dir = root_ / name, fp32_dir = root_ / (std::string(name) + "_fp32");
    model::write_model_directory(random, fp8_dir, model::DType::kBF16, 1ull << 30, fp8(method, scheme));
    const model::Checkpoint fp8_checkpoint(fp8_dir);
    // The fp32 copy: every tensor as the FP8 checkpoint reads it (dequantized), through our writer.
    model::write_model_directory(fp8_checkpoint, fp32_dir, model::DType::kF32, 1ull << 30);
    const model::Checkpoint fp32_checkpoint(fp32_dir);
    ASSERT_FALSE(fp32_checkpoint.config().quantization.is_fp8());
    const ReferenceDecodeResult a = decode(fp8_checkpoint);
    const ReferenceDecodeResult b = decode(fp32_checkpoint);
    ASSERT_EQ(a.tokens.size(), 24u);
    EXPECT_EQ(a.tokens, b.tokens) << name;
    EXPECT_EQ(a.prefill_logits, b.prefill_logits) << name;  // the same fp32 weights, the same arithmetic
    // FP8 rounding moves the logits, but not far: the test would notice scales applied wrongly.
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.prefill_logits.size(); ++i) {
      diff += (a.prefill_logits[i] - unquantized.prefill_logits[i]) * (a.prefill_logits[i] - unquantized.prefill_logits[i]);
      norm += unquantized.prefill_logits[i] * unquantized.prefill_logits[i];
    }
    EXPECT_GT(diff, 0.0) << name;
    EXPECT_LT(std::sqrt(diff / norm), 0.3) << name;
  }
}

TEST_F(Fp8Backend, OnlineQuantizationEqualsAPerChannelCheckpoint) {
  const model::RandomWeights random(small_llama(), 12, "random:small");
  model::write_model_directory(random, root_ / "bf16", model::DType::kBF16, 1ull << 30);
  const model::Checkpoint bf16(root_ / "bf16");
  model::write_model_directory(bf16, root_ / "channel", model::DType::kBF16, 1ull << 30,
                               fp8(QuantizationConfig::Method::kCompressedTensors, model::Fp8Scheme::kChannel));
  const ReferenceDecodeResult online = decode(bf16, "fp8");
  const ReferenceDecodeResult on_disk = decode(model::Checkpoint(root_ / "channel"));
  const ReferenceDecodeResult plain = decode(bf16);
  EXPECT_EQ(online.tokens, on_disk.tokens);
  EXPECT_EQ(online.prefill_logits, on_disk.prefill_logits);
  EXPECT_NE(online.prefill_logits, plain.prefill_logits);  // the FP8 rounding shows
}

TEST_F(Fp8Backend, RefusalsAreClear) {
  const model::RandomWeights random(small_llama(), 13, "random:small");
  model::write_model_directory(random, root_ / "block", model::DType::kBF16, 1ull << 30,
                               fp8(QuantizationConfig::Method::kFp8Block, model::Fp8Scheme::kBlock));
  const model::Checkpoint block(root_ / "block");
  auto error = [](const model::WeightSource& weights, const std::string& device, const std::string& quantization) {
    BackendOptions options;
    options.device = device;
    options.num_kv_blocks = 8;
    options.quantization = quantization;
    try {
      create_backend(weights, options);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // FP8 on CUDA is implemented (tests/backend/cuda/cuda_fp8_test.cpp). Without a GPU it fails on the device,
  // naming it; with one, this model's 200-wide down projection is refused by name (FP8 on CUDA needs input
  // widths that are multiples of 16).
  for (const std::string& e : {error(block, "cuda:0", ""), error(random, "cuda:0", "fp8")}) {
    EXPECT_TRUE(e.find("--device cuda:0") != std::string::npos ||
                e.find("mlp.down_proj.weight has 200 input columns") != std::string::npos)
        << e;
    EXPECT_EQ(e.find("not implemented"), std::string::npos) << e;
  }
  EXPECT_NE(error(block, "cuda:0", "none").find("--quantization none: "), std::string::npos);
  EXPECT_NE(error(block, "cpu", "none").find("--quantization none: "), std::string::npos);
  EXPECT_NE(error(random, "cpu", "int8").find("--quantization: unknown value 'int8'"), std::string::npos);
  EXPECT_EQ(error(block, "cpu", "fp8"), "");  // an FP8 checkpoint is fp8 already
}

// The `tandem` binary: make-model writes both formats, generate runs on them, and the flag's refusals
// exit non-zero with the flag named.
TEST_F(Fp8Backend, CommandLine) {
  fs::create_directories(root_);
  auto run = [](const std::string& args) {
    const std::string cmd = std::string(TANDEM_BINARY) + " " + args + " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
    return std::pair{::pclose(pipe), out};
  };
  for (const char* dtype : {"fp8-block", "fp8-channel"}) {
    const std::string dir = (root_ / dtype).string();
    auto [made, made_out] = run("make-model --preset tiny-llama --dtype " + std::string(dtype) + " --out " + dir);
    ASSERT_EQ(made, 0) << made_out;
    auto [generated, generated_out] = run("generate --model " + dir + " --prompt-ids 1,2,3 --max-tokens 4");
    EXPECT_EQ(generated, 0) << generated_out;
    auto [refused, refused_out] = run("generate --model " + dir + " --quantization none --prompt-ids 1,2 --max-tokens 2");
    EXPECT_NE(refused, 0);
    EXPECT_NE(refused_out.find("--quantization none: " + dir + " is quantized"), std::string::npos) << refused_out;
  }
  auto [online, online_out] = run("generate --model random:tiny-llama --quantization fp8 --prompt-ids 1,2 --max-tokens 2");
  EXPECT_EQ(online, 0) << online_out;
  auto [bad, bad_out] = run("generate --model random:tiny-llama --quantization int8 --prompt-ids 1,2 --max-tokens 2");
  EXPECT_NE(bad, 0);
  EXPECT_NE(bad_out.find("--quantization"), std::string::npos) << bad_out;
  auto [dtype, dtype_out] = run("make-model --preset tiny-llama --dtype fp8-tensor --out " + (root_ / "x").string());
  EXPECT_NE(dtype, 0);
  EXPECT_NE(dtype_out.find("--dtype: unknown dtype 'fp8-tensor'"), std::string::npos) << dtype_out;
}

}  // namespace
}  // namespace tandem::backend
