// The differences between the supported architectures, in one table (STYLE.md "Layout"): the forward
// pass reads these flags instead of switching on the architecture.
#pragma once

#include <string>
#include <string_view>

#include "model/config.h"

namespace tandem::model {

struct ArchitectureTraits {
  std::string_view name;        // config.json "architectures"[0]
  std::string_view model_type;  // config.json "model_type"
  Architecture architecture;
  bool always_qkv_bias;  // Qwen2: q/k/v projections carry biases whatever "attention_bias" says
  bool qk_norm;          // Qwen3: per-head RMSNorm on q and k (weights q_norm/k_norm) before RoPE
};

// nullptr when `name` is not a supported architecture.
const ArchitectureTraits* find_architecture(std::string_view name);
const ArchitectureTraits& architecture_traits(Architecture architecture);
std::string supported_architecture_names();

}  // namespace tandem::model
