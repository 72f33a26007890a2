#include "cli/model_files.h"

#include <cstdlib>
#include <mutex>

#include "common/error.h"
#include "structured/token_constraint.h"
#include "tokenizer/text_stream.h"

namespace tandem::cli {
namespace fs = std::filesystem;

fs::path data_dir() {
  if (const char* env = std::getenv("TANDEM_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return TANDEM_DEFAULT_DATA_DIR;
}

std::string find_tokenizer_dir(const std::string& model, const std::string& explicit_dir, int vocab_size) {
  if (!explicit_dir.empty()) {
    if (!fs::exists(fs::path(explicit_dir) / "tokenizer.json")) throw Error("--tokenizer: no tokenizer.json in '" + explicit_dir + "'");
    return explicit_dir;
  }
  if (model.rfind("random:", 0) != 0) {
    if (fs::exists(fs::path(model) / "tokenizer.json")) return model;
    throw Error("--model " + model + " has no tokenizer.json: pass --tokenizer DIR");
  }
  // Random presets use the real vocabularies; pick the tokenizer whose vocabulary the model has.
  const char* name = vocab_size == 151936 ? "qwen3" : vocab_size == 128256 ? "llama3_1" : nullptr;
  if (name == nullptr) throw Error("--model " + model + ": no known tokenizer for its vocabulary; pass --tokenizer DIR");
  fs::path dir = data_dir() / "tokenizers" / name;
  if (!fs::exists(dir / "tokenizer.json")) {
    throw Error(dir.string() + " is missing: run scripts/fetch_data.sh (or set TANDEM_DATA_DIR), or pass --tokenizer DIR");
  }
  return dir.string();
}

namespace {

class DetokenizerStream : public engine::TextStream {
 public:
  DetokenizerStream(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, bool skip_special_tokens)
      : tokenizer_(std::move(tokenizer)), stream_(*tokenizer_, skip_special_tokens) {}
  std::string push(int32_t token_id) override { return stream_.push(token_id); }

 private:
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;  // keeps the tokenizer alive for the stream
  tokenizer::StreamingDetokenizer stream_;
};

}  // namespace

std::unique_ptr<engine::TextStream> DetokenizerStreams::new_stream(bool skip_special_tokens) {
  return std::make_unique<DetokenizerStream>(tokenizer_, skip_special_tokens);
}

namespace {

class GrammarConstraint final : public engine::TokenConstraint {
 public:
  explicit GrammarConstraint(std::shared_ptr<const structured::CompiledGrammar> g) : matcher_(std::move(g)) {}
  bool fill_allowed(int remaining_tokens, std::span<uint32_t> allowed) const override {
    return matcher_.fill_mask(remaining_tokens, allowed);
  }
  bool advance(int32_t token) override { return matcher_.advance(token); }

 private:
  structured::Matcher matcher_;
};

class GrammarFactory final : public engine::TokenConstraintFactory {
 public:
  explicit GrammarFactory(std::shared_ptr<const structured::CompiledGrammar> g) : grammar_(std::move(g)) {}
  std::unique_ptr<engine::TokenConstraint> start() const override { return std::make_unique<GrammarConstraint>(grammar_); }

 private:
  std::shared_ptr<const structured::CompiledGrammar> grammar_;
};

class VocabularyConstraints final : public engine::ConstraintCompiler {
 public:
  VocabularyConstraints(std::shared_ptr<const tokenizer::Tokenizer> tokenizer, int vocab_size)
      : tokenizer_(std::move(tokenizer)), vocab_size_(vocab_size) {}

  StatusOr<std::shared_ptr<const engine::TokenConstraintFactory>> compile(const std::string& spec) const override {
    std::call_once(once_, [&] {
      // Special tokens never appear inside constrained text; EOS is the engine's to add.
      std::vector<std::optional<std::string>> bytes(tokenizer_->vocab_size());
      for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
        if (tokenizer_->is_special(id)) continue;
        if (auto b = tokenizer_->token_bytes(id)) bytes[id] = std::string(*b);
      }
      vocab_ = std::make_shared<const structured::TokenVocabulary>(bytes, vocab_size_);
    });
    auto grammar = structured::CompiledGrammar::compile_cached(spec, vocab_);
    if (!grammar.ok()) return grammar.status();
    return std::shared_ptr<const engine::TokenConstraintFactory>(std::make_shared<GrammarFactory>(*grammar));
  }

 private:
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  const int vocab_size_;
  mutable std::once_flag once_;
  mutable std::shared_ptr<const structured::TokenVocabulary> vocab_;
};

}  // namespace

std::shared_ptr<const engine::ConstraintCompiler> make_constraint_compiler(std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
                                                                          int vocab_size) {
  return std::make_shared<VocabularyConstraints>(std::move(tokenizer), vocab_size);
}

}  // namespace tandem::cli
