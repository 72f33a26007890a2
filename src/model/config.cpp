#include "model/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <type_traits>
#include <numbers>

#include "common/error.h"
#include "model/architecture.h"

namespace tandem::model {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw Error(source + ": " + what);
}

// nlohmann's get<int>() converts a float or an out-of-range integer with a plain C++ cast, which is
// undefined for a value such as 1e300; every number is checked against its target type first.
[[noreturn]] void wrong_type(const json& v, const char* key, const std::string& source) {
  fail(source, std::string("key '") + key + "' has the wrong type (" + v.type_name() + ")");
}

[[noreturn]] void out_of_range(const json& v, const char* key, const std::string& source) {
  fail(source, std::string("key '") + key + "' is out of range (" + v.dump() + ")");
}

template <typename T>
T convert(const json& v, const char* key, const std::string& source) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) out_of_range(v, key, source);
      return static_cast<T>(v.get<uint64_t>());
    }
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (x < static_cast<int64_t>(std::numeric_limits<T>::min()) || x > static_cast<int64_t>(std::numeric_limits<T>::max())) {
        out_of_range(v, key, source);
      }
      return static_cast<T>(x);
    }
    if (!v.is_number_float()) wrong_type(v, key, source);
    // e.g. 4096.0, as some exporters write integers
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d)) wrong_type(v, key, source);
    if (d < static_cast<double>(std::numeric_limits<T>::min()) || d > static_cast<double>(std::numeric_limits<T>::max())) {
      out_of_range(v, key, source);
    }
    return static_cast<T>(d);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) wrong_type(v, key, source);
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max())) out_of_range(v, key, source);
    return static_cast<T>(d);
  } else {
    try {
      return v.get<T>();
    } catch (const json::exception&) {
      wrong_type(v, key, source);
    }
  }
}

template <typename T>
T get_required(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail(source, std::string("missing required key '") + key + "'");
  return convert<T>(*it, key, source);
}

template <typename T>
T get_optional(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return convert<T>(*it, key, source);
}

void require_positive(int value, const char* key, const std::string& source) {
  if (value <= 0) fail(source, std::string("'") + key + "' must be positive, got " + std::to_string(value));
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, "expected a JSON object");
  ModelConfig c;
  auto archs = j.find("architectures");
  if (archs == j.end() || !archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    fail(source, "missing 'architectures' (expected e.g. [\"Qwen3ForCausalLM\"])");
  }
  c.architecture_name = (*archs)[0].get<std::string>();
  const ArchitectureTraits* traits = find_architecture(c.architecture_name);
  if (traits == nullptr) {
    fail(source, "unsupported architecture '" + c.architecture_name + "' (supported: " +
                     supported_architecture_names() + ")");
  }
  c.architecture = traits->architecture;
  c.model_type = get_optional<std::string>(j, "model_type", std::string(traits->model_type), source);
  c.vocab_size = get_required<int>(j, "vocab_size", source);
  c.hidden_size = get_required<int>(j, "hidden_size", source);
  c.intermediate_size = get_required<int>(j, "intermediate_size", source);
  c.num_layers = get_required<int>(j, "num_hidden_layers", source);
  c.num_heads = get_required<int>(j, "num_attention_heads", source);
  c.num_kv_heads = get_optional<int>(j, "num_key_value_heads", c.num_heads, source);
  require_positive(c.vocab_size, "vocab_size", source);
  require_positive(c.hidden_size, "hidden_size", source);
  require_positive(c.intermediate_size, "intermediate_size", source);
  require_positive(c.num_layers, "num_hidden_layers", source);
  require_positive(c.num_heads, "num_attention_heads", source);
  require_positive(c.num_kv_heads, "num_key_value_heads", source);
  if (c.num_heads % c.num_kv_heads != 0) {
    fail(source, "num_attention_heads (" + std::to_string(c.num_heads) +
                     ") must be a multiple of num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  }
  int default_head_dim = c.hidden_size / c.num_heads;
  c.head_dim = get_optional<int>(j, "head_dim", default_head_dim, source);
  require_positive(c.head_dim, "head_dim", source);
  if (c.head_dim % 2 != 0) fail(source, "'head_dim' must be even for RoPE, got " + std::to_string(c.head_dim));
  c.max_position_embeddings = get_optional<int>(j, "max_position_embeddings", 4096, source);
  c.rms_norm_eps = get_optional<float>(j, "rms_norm_eps", 1e-6f, source);
  c.tie_word_embeddings = get_optional<bool>(j, "tie_word_embeddings", false, source);
  c.attention_bias = traits->always_qkv_bias || get_optional<bool>(j, "attention_bias", false, source);
  c.qk_norm = traits->qk_norm;
  c.torch_dtype = get_optional<std::string>(j, "torch_dtype", get_optional<std::string>(j, "dtype", "bfloat16", source), source);
  c.bos_token_id = get_optional<int>(j, "bos_token_id", -1, source);
  if (auto eos = j.find("eos_token_id"); eos != j.end() && !eos->is_null()) {
    if (eos->is_number_integer()) c.eos_token_ids.push_back(convert<int>(*eos, "eos_token_id", source));
    else if (eos->is_array()) for (const auto& e : *eos) c.eos_token_ids.push_back(convert<int>(e, "eos_token_id", source));
    else fail(source, "key 'eos_token_id' has the wrong type (" + std::string(eos->type_name()) + ")");
  }

  // transformers 5 moves rope_theta into "rope_parameters"; older files keep it at the top level.
  const json* rope = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) rope = &*it;
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) rope = &*it;
  c.rope_theta = get_optional<float>(j, "rope_theta", 10000.0f, source);
  if (rope != nullptr) {
    c.rope_theta = get_optional<float>(*rope, "rope_theta", c.rope_theta, source);
    std::string type = get_optional<std::string>(*rope, "rope_type", get_optional<std::string>(*rope, "type", "default", source), source);
    if (type == "llama3") {
      RopeScaling& s = c.rope_scaling;
      s.type = RopeScaling::Type::kLlama3;
      s.factor = get_required<float>(*rope, "factor", source);
      s.low_freq_factor = get_required<float>(*rope, "low_freq_factor", source);
      s.high_freq_factor = get_required<float>(*rope, "high_freq_factor", source);
      s.original_max_position_embeddings = get_required<int>(*rope, "original_max_position_embeddings", source);
      if (s.high_freq_factor <= s.low_freq_factor) fail(source, "rope_scaling: high_freq_factor must exceed low_freq_factor");
    } else if (type != "default") {
      fail(source, "unsupported rope_scaling type '" + type + "' (supported: default, llama3)");
    }
  }
  if (auto q = j.find("quantization_config"); q != j.end() && !q->is_null()) {
    c.quantization = parse_quantization_config(*q, source);
  }
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + ": cannot open (is this a Hugging Face model directory?)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": invalid JSON: " + e.what());
  }
  return parse_model_config(j, path.string());
}

json model_config_to_json(const ModelConfig& c) {
  json j;
  j["architectures"] = {c.architecture_name};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = 0.0;
  j["torch_dtype"] = c.torch_dtype;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.architecture == Architecture::kQwen2 || c.architecture == Architecture::kQwen3) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = c.num_layers;
  }
  if (c.architecture == Architecture::kLlama) j["mlp_bias"] = false;
  if (c.quantization.method == QuantizationConfig::Method::kFp8Block ||
      c.quantization.method == QuantizationConfig::Method::kCompressedTensors) {
    j["quantization_config"] = quantization_config_to_json(c.quantization);
  }
  return j;
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / std::pow(c.rope_theta, exponent);
  }
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    const auto& s = c.rope_scaling;
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / s.low_freq_factor;
    const float high_freq_wavelen = old_len / s.high_freq_factor;
    for (int i = 0; i < half; ++i) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / inv[i];
      if (wavelen > low_freq_wavelen) {
        inv[i] = inv[i] / s.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const float smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        inv[i] = (1.0f - smooth) * inv[i] / s.factor + smooth * inv[i];
      }
    }
  }
  return inv;
}

}  // namespace tandem::model
