#include "model/weight_source.h"

#include <cstring>

#include "common/error.h"
#include "common/half.h"
#include "model/checkpoint.h"
#include "model/random_weights.h"

namespace tandem::model {

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  std::vector<TensorSpec> specs;
  specs.push_back({"model.embed_tokens.weight", {c.vocab_size, hidden}});
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    specs.push_back({p + "input_layernorm.weight", {hidden}});
    specs.push_back({p + "self_attn.q_proj.weight", {c.q_size(), hidden}});
    specs.push_back({p + "self_attn.k_proj.weight", {c.kv_size(), hidden}});
    specs.push_back({p + "self_attn.v_proj.weight", {c.kv_size(), hidden}});
    if (c.attention_bias) {
      specs.push_back({p + "self_attn.q_proj.bias", {c.q_size()}});
      specs.push_back({p + "self_attn.k_proj.bias", {c.kv_size()}});
      specs.push_back({p + "self_attn.v_proj.bias", {c.kv_size()}});
    }
    if (c.qk_norm) {
      specs.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      specs.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {hidden, c.q_size()}});
    specs.push_back({p + "post_attention_layernorm.weight", {hidden}});
    specs.push_back({p + "mlp.gate_proj.weight", {inter, hidden}});
    specs.push_back({p + "mlp.up_proj.weight", {inter, hidden}});
    specs.push_back({p + "mlp.down_proj.weight", {hidden, inter}});
  }
  specs.push_back({"model.norm.weight", {hidden}});
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {c.vocab_size, hidden}});
  return specs;
}

void convert_elements(DType from, const void* in, DType to, void* out, size_t count) {
  if (from == to) {
    std::memcpy(out, in, count * dtype_size(from));
    return;
  }
  auto load = [from, in](size_t i) -> float {
    switch (from) {
      case DType::kF32: return static_cast<const float*>(in)[i];
      case DType::kBF16: return bf16_to_float(static_cast<const uint16_t*>(in)[i]);
      case DType::kF16: return fp16_to_float(static_cast<const uint16_t*>(in)[i]);
      case DType::kF8E4M3:  // FP8 bytes mean nothing without their scales: see model/fp8.h
      case DType::kUnsupported: break;
    }
    TANDEM_CHECK(false);
  };
  switch (to) {
    case DType::kF32:
      for (size_t i = 0; i < count; ++i) static_cast<float*>(out)[i] = load(i);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) static_cast<uint16_t*>(out)[i] = float_to_bf16(load(i));
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) static_cast<uint16_t*>(out)[i] = float_to_fp16(load(i));
      return;
    case DType::kF8E4M3:
    case DType::kUnsupported: break;
  }
  TANDEM_CHECK(false);
}

std::unique_ptr<WeightSource> open_weight_source(const std::string& model, uint64_t seed) {
  constexpr std::string_view kRandomPrefix = "random:";
  if (model.rfind(kRandomPrefix, 0) == 0) {
    return std::make_unique<RandomWeights>(preset_config(model.substr(kRandomPrefix.size())), seed,
                                           model);
  }
  return std::make_unique<Checkpoint>(model);
}

}  // namespace tandem::model
