// Where the CLI finds the files a model needs besides its weights: the data folder that
// scripts/fetch_data.sh fills (real tokenizers), the tokenizer of a model, and the adapter that gives
// the engine text deltas through the tokenizer's streaming detokenizer.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "engine/constraint.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {

// $TANDEM_DATA_DIR, else the data/ folder of the source tree this binary was built from.
std::filesystem::path data_dir();

// The directory holding tokenizer.json for `model` ("random:<preset>" or a model directory):
// `explicit_dir` when given; the model directory when it has tokenizer.json; for random presets the
// real tokenizer of their vocabulary (Qwen3: 151936, Llama-3.1: 128256) under data_dir(). Throws
// tandem::Error naming the flag (--tokenizer) when none is found.
std::string find_tokenizer_dir(const std::string& model, const std::string& explicit_dir, int vocab_size);

// Engine text streams over a shared tokenizer (tokenizer::StreamingDetokenizer per sequence).
class DetokenizerStreams : public engine::TextStreamFactory {
 public:
  explicit DetokenizerStreams(std::shared_ptr<const tokenizer::Tokenizer> tokenizer) : tokenizer_(std::move(tokenizer)) {}
  std::unique_ptr<engine::TextStream> new_stream(bool skip_special_tokens) override;

 private:
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
};

// Structured output over `tokenizer`'s vocabulary (src/structured), masks `vocab_size` tokens long (the
// model's vocabulary). The vocabulary's trie is built on the first compile; grammars are cached by spec.
std::shared_ptr<const engine::ConstraintCompiler> make_constraint_compiler(std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                                                                          int vocab_size);

}  // namespace tandem::cli
