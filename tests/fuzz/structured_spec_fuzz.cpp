// Fuzz target: a user's structured-output constraint as the server handles it — the frontend's check
// (validate_spec), then, when that passes, the worker's compile against a vocabulary (CompiledGrammar,
// with reduced DFA limits) and a walk through the masks. The first byte picks what the rest is: 0 a guided_regex (also as a JSON
// schema string pattern), 1 a JSON schema (guided_json / response_format), 2 a whole constraint spec.
// Inputs are capped at 1 KiB: a constraint that small must check and compile quickly (a slow one is a
// denial of service on a worker, reported by libFuzzer's -timeout), and anything refused must be a
// clean InvalidArgument.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "structured/spec.h"
#include "structured/token_constraint.h"

namespace {

using tandem::structured::CompiledGrammar;
using tandem::structured::TokenVocabulary;
using ordered = nlohmann::ordered_json;

constexpr size_t kMaxInput = 1024;

// Every single byte (so every text can be written) and a few multi-byte tokens, like a byte-level BPE.
std::shared_ptr<const TokenVocabulary> vocabulary() {
  static const auto vocab = [] {
    std::vector<std::optional<std::string>> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(std::string(1, static_cast<char>(b)));
    for (const char* t : {"{\"", "\":", "\", \"", "true", "false", "null", "  ", "\\n", "12", "ab", "\xC3\xA9"}) {
      bytes.emplace_back(t);
    }
    bytes.emplace_back(std::nullopt);  // a special token: never allowed
    return std::make_shared<const TokenVocabulary>(bytes, static_cast<int>(bytes.size()) + 5);
  }();
  return vocab;
}

// The spec text the frontend would build, or nullopt when the frontend would refuse the input earlier.
std::optional<std::string> spec_of(uint8_t mode, const std::string& rest) {
  if (mode == 2) return rest;
  if (mode == 0) {
    // guided_regex arrives inside JSON, so as valid UTF-8; invalid bytes are replaced like a decoder would.
    const std::string pattern = ordered(rest).dump(-1, ' ', false, ordered::error_handler_t::replace);
    const ordered p = ordered::parse(pattern);
    return ordered{{"regex", p}}.dump();
  }
  const ordered schema = ordered::parse(rest, nullptr, /*allow_exceptions=*/false);
  if (schema.is_discarded() || !(schema.is_object() || schema.is_boolean())) return std::nullopt;
  return tandem::structured::json_schema_spec(schema).dump(-1, ' ', false, ordered::error_handler_t::replace);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInput) return 0;
  const uint8_t mode = data[0] % 3;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::optional<std::string> spec = spec_of(mode, rest);
  if (!spec) return 0;
  const tandem::Status valid = tandem::structured::validate_spec(*spec);
  if (!valid.ok()) {
    if (valid.code() != tandem::StatusCode::kInvalidArgument) __builtin_trap();
    return 0;
  }
  // The worker's compile (CompiledGrammar::compile) with a quarter of its DFA budget, so that a legitimate
  // but large grammar (json_object: about a second per compile under ASan on a loaded machine) does not
  // read as a hang; what the limits do not bound — tree building, size checks, regex parsing — stays
  // exposed to the timeout. The full budget's bound is tests/structured's CompileWorkIsBounded.
  tandem::structured::DfaLimits limits;
  limits.max_dfa_states = 15000;
  limits.max_subset_steps = 1000000;
  std::optional<CompiledGrammar> compiled;
  try {
    compiled.emplace(tandem::structured::compile_dfa(tandem::structured::spec_grammar(ordered::parse(*spec)), limits),
                     vocabulary());
  } catch (const tandem::structured::GrammarError&) {
    return 0;
  }
  const CompiledGrammar& g = *compiled;
  // A few steps, each taking the first allowed token (or ending): what a sequence does with the masks.
  std::vector<uint32_t> words(g.vocab().num_words());
  int32_t state = 0;
  for (int step = 0; step < 16 && state >= 0; ++step) {
    const bool can_end = g.fill_mask(state, 16 - step, words);
    int32_t token = -1;
    for (int t = 0; t < g.vocab().size() && token < 0; ++t) {
      if (words[t >> 5] >> (t & 31) & 1) token = t;
    }
    if (token < 0) {
      // A live state always has a way on or may end (the DFA keeps only states that reach acceptance).
      if (!can_end && g.dfa().has_exit[state]) __builtin_trap();
      break;
    }
    state = g.advance(state, token);
    if (state < 0) __builtin_trap();  // an allowed token must lead somewhere live
  }
  return 0;
}
