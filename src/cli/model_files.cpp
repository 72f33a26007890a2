#include "cli/model_files.h"

#include <cstdlib>

#include "common/error.h"
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

}  // namespace tandem::cli
