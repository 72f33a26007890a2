// FP8 checkpoints on disk (issue 18): what make-model writes in both formats loads back as FP8 values
// times scales, within FP8 rounding of the random weights it was made from; a missing or misshapen scale,
// or FP8 tensors without a quantization_config, fail at load naming the file and tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "model/checkpoint.h"
#include "model/presets.h"
#include "model/random_weights.h"
#include "model/safetensors.h"
#include "model/safetensors_writer.h"

namespace tandem::model {
namespace {
namespace fs = std::filesystem;

// Widths that are not multiples of 128, so block scales have partial blocks in both directions.
ModelConfig small_config() {
  ModelConfig c = preset_config("tiny-llama");
  c.vocab_size = 300;
  c.hidden_size = 160;
  c.num_heads = 5;
  c.num_kv_heads = 1;
  c.head_dim = 32;
  c.intermediate_size = 200;
  return c;
}

QuantizationConfig fp8(QuantizationConfig::Method method, Fp8Scheme scheme) {
  QuantizationConfig q;
  q.method = method;
  q.weight_scheme = scheme;
  q.unquantized_modules = {"lm_head"};
  return q;
}

class Fp8Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_fp8_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string load_error(const fs::path& dir) {
    try {
      Checkpoint checkpoint(dir);
      checkpoint.validate();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  // Rewrites model.safetensors keeping every tensor except `drop`, with `reshape` given a new shape.
  void rewrite(const std::string& drop, const std::string& reshape = "", const Shape& shape = {}) {
    auto file = std::make_unique<SafetensorsFile>(dir_ / "model.safetensors");
    std::vector<TensorToWrite> keep;
    for (const auto& [name, e] : file->entries()) {
      if (name == drop) continue;
      keep.push_back({name, e.dtype, name == reshape ? shape : e.shape});
    }
    write_safetensors(dir_ / "rewritten.safetensors", keep, [&](const TensorToWrite& t, std::byte* out) {
      const SafetensorsEntry* e = file->find(t.name);
      const size_t bytes = static_cast<size_t>(num_elements(t.shape)) * dtype_size(t.dtype);
      std::memcpy(out, file->data(*e), std::min(bytes, e->data_end - e->data_begin));
    });
    file.reset();
    fs::rename(dir_ / "rewritten.safetensors", dir_ / "model.safetensors");
  }

  fs::path dir_;
};

TEST_F(Fp8Checkpoint, BothFormatsLoadBackAsFp8ValuesTimesScales) {
  const RandomWeights random(small_config(), 3, "random:small");
  for (const auto& [method, scheme, suffix] :
       {std::tuple{QuantizationConfig::Method::kFp8Block, Fp8Scheme::kBlock, "weight_scale_inv"},
        std::tuple{QuantizationConfig::Method::kCompressedTensors, Fp8Scheme::kChannel, "weight_scale"}}) {
    fs::remove_all(dir_);
    write_model_directory(random, dir_, DType::kBF16, 1ull << 30, fp8(method, scheme));
    Checkpoint checkpoint(dir_);
    ASSERT_NO_THROW(checkpoint.validate());
    EXPECT_EQ(checkpoint.config().quantization.method, method);
    SafetensorsFile file(dir_ / "model.safetensors");
    for (const TensorSpec& spec : expected_tensors(checkpoint.config())) {
      std::optional<QuantizedWeight> q = checkpoint.read_quantized(spec);
      std::vector<float> read(static_cast<size_t>(num_elements(spec.shape)));
      checkpoint.read(spec, DType::kF32, read.data());
      std::vector<float> original(read.size());
      random.read(spec, DType::kF32, original.data());
      if (!is_quantizable_linear(spec.name)) {
        EXPECT_FALSE(q.has_value()) << spec.name;
        EXPECT_EQ(file.find(spec.name)->dtype, DType::kBF16) << spec.name;
        continue;
      }
      ASSERT_TRUE(q.has_value()) << spec.name;
      EXPECT_EQ(q->scheme, scheme);
      // The bytes and scales are the file's, and read() is exactly byte value x its scale.
      const SafetensorsEntry* values = file.find(spec.name);
      const SafetensorsEntry* scales = file.find(spec.name.substr(0, spec.name.size() - 6) + suffix);
      ASSERT_TRUE(values != nullptr && scales != nullptr) << spec.name;
      EXPECT_EQ(values->dtype, DType::kF8E4M3);
      EXPECT_EQ(scales->dtype, DType::kF32);
      const int64_t rows = spec.shape[0], cols = spec.shape[1];
      if (scheme == Fp8Scheme::kBlock) EXPECT_EQ(scales->shape, (Shape{(rows + 127) / 128, (cols + 127) / 128}));
      else EXPECT_EQ(scales->shape, (Shape{rows, 1}));
      const auto* bytes = reinterpret_cast<const uint8_t*>(file.data(*values));
      const auto* scale = reinterpret_cast<const float*>(file.data(*scales));
      const int64_t scale_cols = scheme == Fp8Scheme::kBlock ? (cols + 127) / 128 : 1;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = static_cast<size_t>(r * cols + c);
          const float s = scheme == Fp8Scheme::kBlock ? scale[(r / 128) * scale_cols + c / 128] : scale[r];
          ASSERT_EQ(read[i], e4m3_to_float(bytes[i]) * s) << spec.name << " (" << r << ", " << c << ")";
          // Within half an e4m3 step of the random weight it was made from.
          const float bound = std::max(std::fabs(original[i]) * 0.0625f, s * 0.0009765625f) * 1.0001f;
          ASSERT_LE(std::fabs(original[i] - read[i]), bound) << spec.name << " (" << r << ", " << c << ")";
        }
      }
    }
  }
}

TEST_F(Fp8Checkpoint, MissingScaleIsNamed) {
  const RandomWeights random(small_config(), 3, "random:small");
  write_model_directory(random, dir_, DType::kBF16, 1ull << 30,
                        fp8(QuantizationConfig::Method::kFp8Block, Fp8Scheme::kBlock));
  rewrite("model.layers.1.mlp.up_proj.weight_scale_inv");
  const std::string error = load_error(dir_);
  EXPECT_NE(error.find("tensor 'model.layers.1.mlp.up_proj.weight_scale_inv' is missing"), std::string::npos) << error;
}

TEST_F(Fp8Checkpoint, MisshapenScaleIsNamed) {
  const RandomWeights random(small_config(), 3, "random:small");
  write_model_directory(random, dir_, DType::kBF16, 1ull << 30,
                        fp8(QuantizationConfig::Method::kCompressedTensors, Fp8Scheme::kChannel));
  rewrite("", "model.layers.0.self_attn.o_proj.weight_scale", {1, 160});
  const std::string error = load_error(dir_);
  EXPECT_NE(error.find("model.safetensors: tensor 'model.layers.0.self_attn.o_proj.weight_scale' has shape [1, 160], expected [160, 1]"),
            std::string::npos) << error;
}

TEST_F(Fp8Checkpoint, Fp8TensorsWithoutQuantizationConfigAreRefused) {
  const RandomWeights random(small_config(), 3, "random:small");
  write_model_directory(random, dir_, DType::kBF16, 1ull << 30,
                        fp8(QuantizationConfig::Method::kFp8Block, Fp8Scheme::kBlock));
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir_ / "config.json"));
  config.erase("quantization_config");
  std::ofstream(dir_ / "config.json") << config.dump();
  const std::string error = load_error(dir_);
  EXPECT_NE(error.find("tensor 'model.layers.0.self_attn.q_proj.weight' is F8_E4M3 but"), std::string::npos) << error;
  EXPECT_NE(error.find("has no quantization_config"), std::string::npos) << error;
}

TEST_F(Fp8Checkpoint, UnsupportedQuantizationFailsAtOpen) {
  const RandomWeights random(small_config(), 3, "random:small");
  write_model_directory(random, dir_, DType::kBF16, 1ull << 30,
                        fp8(QuantizationConfig::Method::kFp8Block, Fp8Scheme::kBlock));
  nlohmann::json config = nlohmann::json::parse(std::ifstream(dir_ / "config.json"));
  config["quantization_config"]["weight_block_size"] = {64, 64};
  std::ofstream(dir_ / "config.json") << config.dump();
  const std::string error = load_error(dir_);
  EXPECT_NE(error.find("config.json: quantization_config.weight_block_size: [64,64] is not supported"), std::string::npos)
      << error;
}

TEST(Fp8Presets, Llama31_70bHasThePublishedShape) {
  ModelConfig c = preset_config("llama-3.1-70b");
  EXPECT_EQ(c.hidden_size, 8192);
  EXPECT_EQ(c.num_layers, 80);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.intermediate_size, 28672);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
}

}  // namespace
}  // namespace tandem::model
