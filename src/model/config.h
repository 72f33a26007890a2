// ModelConfig: the shape and numerics of a decoder-only transformer, parsed from a Hugging Face
// config.json (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) with its quantization_config.
// Plain value; thread-safe to share.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/quantization.h"

namespace tandem::model {

enum class Architecture { kLlama, kQwen2, kQwen3 };

// Rope scaling as Llama-3.1 uses it ("rope_type": "llama3"); kNone is plain RoPE.
struct RopeScaling {
  enum class Type { kNone, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as in config.json, e.g. "Qwen3ForCausalLM"
  std::string model_type;         // "llama", "qwen2", "qwen3"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // explicit in config.json for Qwen3; hidden_size / num_heads otherwise
  int max_position_embeddings = 0;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projection biases (always on for Qwen2)
  bool qk_norm = false;         // per-head RMSNorm of q and k before RoPE (Qwen3)
  std::vector<int> eos_token_ids;
  int bos_token_id = -1;
  std::string torch_dtype = "bfloat16";
  QuantizationConfig quantization;  // config.json "quantization_config"; kNone when absent

  int q_size() const { return num_heads * head_dim; }
  int kv_size() const { return num_kv_heads * head_dim; }
};

// Parses config.json text. Throws tandem::Error naming `source` (the file) and the offending key.
ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source);
ModelConfig load_model_config(const std::filesystem::path& config_path);

// The Hugging Face config.json for `config` (what make-model writes and transformers reads).
nlohmann::json model_config_to_json(const ModelConfig& config);

// RoPE's inverse frequencies [head_dim / 2]: rope_theta^(-2i / head_dim), with Llama-3.1's smoothing of
// long wavelengths when rope_scaling is kLlama3 (transformers' _compute_llama3_parameters). Every backend
// rotates with these, so they agree to the bit.
std::vector<float> rope_inv_freq(const ModelConfig& config);

}  // namespace tandem::model
