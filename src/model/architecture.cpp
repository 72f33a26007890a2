#include "model/architecture.h"

namespace tandem::model {
namespace {

constexpr ArchitectureTraits kArchitectures[] = {
    {"LlamaForCausalLM", "llama", Architecture::kLlama, /*always_qkv_bias=*/false, /*qk_norm=*/false},
    {"Qwen2ForCausalLM", "qwen2", Architecture::kQwen2, /*always_qkv_bias=*/true, /*qk_norm=*/false},
    {"Qwen3ForCausalLM", "qwen3", Architecture::kQwen3, /*always_qkv_bias=*/false, /*qk_norm=*/true},
};

}  // namespace

const ArchitectureTraits* find_architecture(std::string_view name) {
  for (const auto& traits : kArchitectures) {
    if (traits.name == name) return &traits;
  }
  return nullptr;
}

const ArchitectureTraits& architecture_traits(Architecture architecture) {
  for (const auto& traits : kArchitectures) {
    if (traits.architecture == architecture) return traits;
  }
  return kArchitectures[0];
}

std::string supported_architecture_names() {
  std::string names;
  for (const auto& traits : kArchitectures) {
    if (!names.empty()) names += ", ";
    names += traits.name;
  }
  return names;
}

}  // namespace tandem::model
