// Loading the transformers references committed under tests/data/references (tools/references/make_references.py).
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace tandem::testing {

struct PromptReference {
  std::vector<int32_t> ids;
  std::vector<float> last_logits;                  // full vector (tiny fixtures)
  std::vector<std::pair<int32_t, float>> top_logits;  // the largest logits (real-vocabulary models)
  std::vector<int32_t> greedy;
};

inline std::vector<PromptReference> load_references(const std::string& name) {
  std::ifstream in(std::string(TANDEM_TEST_DATA_DIR) + "/references/" + name + ".json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<PromptReference> out;
  for (const auto& p : j.at("prompts")) {
    PromptReference r;
    r.ids = p.at("ids").get<std::vector<int32_t>>();
    if (p.contains("last_logits")) r.last_logits = p.at("last_logits").get<std::vector<float>>();
    if (p.contains("top_logits")) {
      for (const auto& pair : p.at("top_logits")) r.top_logits.emplace_back(pair[0].get<int32_t>(), pair[1].get<float>());
    }
    r.greedy = p.at("greedy").get<std::vector<int32_t>>();
    out.push_back(std::move(r));
  }
  return out;
}

// ||a - b|| / ||b||; +infinity when the lengths differ (or b is empty), so every `relative_error(...) <
// bound` check fails on a truncated or padded vector instead of comparing the common prefix.
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || b.empty()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(diff / norm);
}

}  // namespace tandem::testing
