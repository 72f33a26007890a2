// Named model shapes for `random:<preset>` and `tandem make-model --preset`: the real shapes of
// Qwen3-0.6B, Llama-3.1-8B and Llama-3.1-70B (from their published config.json), and tiny ones for tests and the
// built-in demo model (real vocabulary sizes, so the real tokenizers work with them).
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace tandem::model {

// Throws tandem::Error listing the known presets when `name` is not one.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace tandem::model
