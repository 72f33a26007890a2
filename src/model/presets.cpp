#include "model/presets.h"

#include <functional>
#include <utility>

#include "common/error.h"
#include "model/architecture.h"

namespace tandem::model {
namespace {

ModelConfig base(Architecture arch) {
  ModelConfig c;
  const ArchitectureTraits& traits = architecture_traits(arch);
  c.architecture = arch;
  c.architecture_name = std::string(traits.name);
  c.model_type = std::string(traits.model_type);
  c.attention_bias = traits.always_qkv_bias;
  c.qk_norm = traits.qk_norm;
  c.torch_dtype = "bfloat16";
  return c;
}

// Qwen3-0.6B config.json.
ModelConfig qwen3_0_6b() {
  ModelConfig c = base(Architecture::kQwen3);
  c.vocab_size = 151936;
  c.hidden_size = 1024;
  c.intermediate_size = 3072;
  c.num_layers = 28;
  c.num_heads = 16;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 40960;
  c.rope_theta = 1000000.0f;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151645};
  return c;
}

// Llama-3.1-8B config.json.
ModelConfig llama_3_1_8b() {
  ModelConfig c = base(Architecture::kLlama);
  c.vocab_size = 128256;
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.max_position_embeddings = 131072;
  c.rope_theta = 500000.0f;
  c.rope_scaling = {RopeScaling::Type::kLlama3, 8.0f, 1.0f, 4.0f, 8192};
  c.rms_norm_eps = 1e-5f;
  c.tie_word_embeddings = false;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001, 128008, 128009};
  return c;
}

// Llama-3.1-70B config.json: Llama-3.1-8B's vocabulary, rope and norms at the 70B's width and depth.
ModelConfig llama_3_1_70b() {
  ModelConfig c = llama_3_1_8b();
  c.hidden_size = 8192;
  c.intermediate_size = 28672;
  c.num_layers = 80;
  c.num_heads = 64;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  return c;
}

// Tiny models: the real vocabularies with a few small layers. The demo model is tiny-qwen3.
ModelConfig shrink(ModelConfig c) {
  c.hidden_size = 128;
  c.intermediate_size = 384;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 32;
  c.max_position_embeddings = 4096;
  return c;
}

ModelConfig tiny_qwen2() {
  ModelConfig c = shrink(qwen3_0_6b());
  ModelConfig q2 = base(Architecture::kQwen2);
  q2.vocab_size = c.vocab_size;
  q2.hidden_size = c.hidden_size;
  q2.intermediate_size = c.intermediate_size;
  q2.num_layers = c.num_layers;
  q2.num_heads = c.num_heads;
  q2.num_kv_heads = c.num_kv_heads;
  q2.head_dim = c.hidden_size / c.num_heads;
  q2.max_position_embeddings = c.max_position_embeddings;
  q2.rope_theta = 1000000.0f;
  q2.tie_word_embeddings = true;
  q2.bos_token_id = 151643;
  q2.eos_token_ids = {151645};
  return q2;
}

const std::vector<std::pair<std::string, std::function<ModelConfig()>>>& presets() {
  static const std::vector<std::pair<std::string, std::function<ModelConfig()>>> kPresets = {
      {"qwen3-0.6b", qwen3_0_6b},
      {"llama-3.1-8b", llama_3_1_8b},
      {"llama-3.1-70b", llama_3_1_70b},
      {"tiny-qwen3", [] { return shrink(qwen3_0_6b()); }},
      {"tiny-llama", [] { return shrink(llama_3_1_8b()); }},
      {"tiny-qwen2", tiny_qwen2},
  };
  return kPresets;
}

}  // namespace

ModelConfig preset_config(const std::string& name) {
  for (const auto& [preset, make] : presets()) {
    if (preset == name) return make();
  }
  std::string known;
  for (const auto& name_and_make : presets()) known += (known.empty() ? "" : ", ") + name_and_make.first;
  throw Error("unknown model preset '" + name + "' (known presets: " + known + ")");
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& name_and_make : presets()) names.push_back(name_and_make.first);
  return names;
}

}  // namespace tandem::model
