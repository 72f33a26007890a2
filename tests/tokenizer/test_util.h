// Shared helpers for the tokenizer tests: the real tokenizers (loaded once) and fixture files.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "tokenizer/tokenizer.h"

namespace tandem::tokenizer::testing {

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(read_text(path)); }

inline std::string test_data(const std::string& name) { return std::string(TANDEM_TEST_DATA_DIR) + "/tokenizer/" + name; }

inline std::string model_dir(const std::string& model) { return std::string(TANDEM_DATA_DIR) + "/tokenizers/" + model; }

// The real tokenizer files are fetched by scripts/fetch_data.sh; each is loaded once per test
// process, and only when a test asks for it (ctest runs every test in its own process).
inline const Tokenizer& real_tokenizer(const std::string& model) {
  if (model == "qwen3") {
    static const std::unique_ptr<Tokenizer> qwen3 = Tokenizer::load(model_dir("qwen3"));
    return *qwen3;
  }
  static const std::unique_ptr<Tokenizer> llama = Tokenizer::load(model_dir("llama3_1"));
  return *llama;
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace tandem::tokenizer::testing
