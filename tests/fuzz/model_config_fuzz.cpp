// Fuzz target: config.json -> ModelConfig (parse_model_config) and what is derived from it at load
// (RoPE frequencies). Arbitrary JSON must be refused with tandem::Error naming the key, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto json = nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(data), size), nullptr, false);
  if (json.is_discarded()) return 0;
  try {
    auto config = tandem::model::parse_model_config(json, "config.json");
    (void)tandem::model::model_config_to_json(config).dump();
    // Keep the RoPE table small: a valid but huge head_dim is not a parser finding.
    if (config.head_dim > 0 && config.head_dim <= 4096) (void)tandem::model::rope_inv_freq(config);
  } catch (const tandem::Error&) {
  }
  return 0;
}
