// config.json parsing against the fixtures transformers wrote (tests/data/models) and hand-made cases.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "common/error.h"
#include "model/config.h"
#include "model/presets.h"

namespace tandem::model {
namespace {

const std::string kModels = std::string(TANDEM_TEST_DATA_DIR) + "/models/";

TEST(ModelConfig, ParsesLlamaWithLlama3RopeScaling) {
  ModelConfig c = load_model_config(kModels + "llama_gqa_rope3/config.json");
  EXPECT_EQ(c.architecture, Architecture::kLlama);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 8.0f);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 32);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
}

TEST(ModelConfig, ParsesQwen2BiasesAndQwen3QkNorm) {
  ModelConfig q2 = load_model_config(kModels + "qwen2_gqa_tied_fp16/config.json");
  EXPECT_EQ(q2.architecture, Architecture::kQwen2);
  EXPECT_TRUE(q2.attention_bias);
  EXPECT_FALSE(q2.qk_norm);
  EXPECT_TRUE(q2.tie_word_embeddings);
  EXPECT_EQ(q2.head_dim, 16);  // hidden_size / num_attention_heads
  ModelConfig q3 = load_model_config(kModels + "qwen3_gqa/config.json");
  EXPECT_EQ(q3.architecture, Architecture::kQwen3);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_FALSE(q3.attention_bias);
  EXPECT_EQ(q3.head_dim, 32);  // explicit, != hidden_size / num_attention_heads
  EXPECT_FLOAT_EQ(q3.rope_theta, 1000000.0f);
}

TEST(ModelConfig, OlderTopLevelRopeFieldsStillParse) {
  auto j = nlohmann::json::parse(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"rope_theta":500000.0,
    "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
    "original_max_position_embeddings":8192}})");
  ModelConfig c = parse_model_config(j, "config.json");
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.0f);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.num_kv_heads, 2);  // defaults to num_attention_heads
  EXPECT_EQ(c.head_dim, 4);
}

void expect_error(const std::string& text, const std::string& fragment) {
  try {
    parse_model_config(nlohmann::json::parse(text), "/m/config.json");
    FAIL() << "expected an error containing: " << fragment;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/m/config.json"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, ErrorsNameTheFileAndTheProblem) {
  expect_error(R"({"architectures":["MistralForCausalLM"]})", "unsupported architecture 'MistralForCausalLM'");
  expect_error(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10})", "'hidden_size'");
  expect_error(R"({"architectures":["LlamaForCausalLM"],"vocab_size":"ten","hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2})", "'vocab_size' has the wrong type");
  expect_error(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2})", "multiple of");
  expect_error(R"({"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
    "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
    "rope_scaling":{"rope_type":"yarn","factor":4.0}})", "unsupported rope_scaling type 'yarn'");
}

// Found by model_config_fuzz (UBSan float-cast-overflow): nlohmann's get<int>() casts a float or a too
// large integer without a check, so 1e300 as a size was undefined behaviour instead of an error.
TEST(ModelConfig, NumbersOutsideTheirTypeAreRefusedByName) {
  const std::string head = R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":16,
    "num_hidden_layers":1,"num_attention_heads":2,)";
  expect_error(head + R"("vocab_size":1e300})", "'vocab_size' is out of range");
  expect_error(head + R"("vocab_size":-1e300})", "'vocab_size' is out of range");
  expect_error(head + R"("vocab_size":5000000000})", "'vocab_size' is out of range");
  expect_error(head + R"("vocab_size":18446744073709551615})", "'vocab_size' is out of range");
  expect_error(head + R"("vocab_size":10.5})", "'vocab_size' has the wrong type");
  expect_error(head + R"("vocab_size":10,"rms_norm_eps":1e300})", "'rms_norm_eps' is out of range");
  expect_error(head + R"("vocab_size":10,"eos_token_id":[1,"two"]})", "'eos_token_id' has the wrong type");
  expect_error(head + R"("vocab_size":10,"eos_token_id":[1,1e300]})", "'eos_token_id' is out of range");
  // An integer written as a float, as some exporters do, still reads.
  auto config = parse_model_config(nlohmann::json::parse(head + R"("vocab_size":10.0})"), "config.json");
  EXPECT_EQ(config.vocab_size, 10);
}

// The same parse as safetensors headers (tests/fuzz/safetensors_fuzz): a number too large for a double
// threw nlohmann's out_of_range past load_model_config instead of an Error naming the file.
TEST(ModelConfig, NumberOutOfRangeIsInvalidJsonNamingTheFile) {
  const std::string path = ::testing::TempDir() + "tandem_config_huge_number.json";
  std::ofstream(path) << R"({"architectures":["Qwen3ForCausalLM"],"vocab_size":1e999})";
  try {
    load_model_config(path);
    ADD_FAILURE() << "no error";
  } catch (const tandem::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": invalid JSON"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, PresetsRoundTripThroughConfigJson) {
  for (const auto& name : preset_names()) {
    ModelConfig c = preset_config(name);
    ModelConfig back = parse_model_config(model_config_to_json(c), name);
    EXPECT_EQ(back.architecture, c.architecture) << name;
    EXPECT_EQ(back.num_layers, c.num_layers) << name;
    EXPECT_EQ(back.head_dim, c.head_dim) << name;
    EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type) << name;
    EXPECT_EQ(back.tie_word_embeddings, c.tie_word_embeddings) << name;
    EXPECT_EQ(back.qk_norm, c.qk_norm) << name;
    EXPECT_EQ(back.attention_bias, c.attention_bias) << name;
  }
  EXPECT_THROW(preset_config("gpt-5"), Error);
}

TEST(ModelConfig, RealShapePresetsMatchThePublishedModels) {
  ModelConfig q = preset_config("qwen3-0.6b");
  EXPECT_EQ(q.num_layers, 28);
  EXPECT_EQ(q.hidden_size, 1024);
  EXPECT_EQ(q.q_size(), 2048);  // 16 heads x 128, wider than hidden_size
  ModelConfig l = preset_config("llama-3.1-8b");
  EXPECT_EQ(l.num_layers, 32);
  EXPECT_EQ(l.intermediate_size, 14336);
  EXPECT_EQ(l.kv_size(), 1024);
}

}  // namespace
}  // namespace tandem::model
