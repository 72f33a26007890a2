// Token codecs for the benchmark: the word codec for stub servers, and the lookup of a real one.
#include "loadgen/token_codec.h"

#include <filesystem>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace tandem::loadgen {
namespace {

class WordCodec final : public TokenCodec {
 public:
  explicit WordCodec(int32_t vocab_size) : vocab_size_(vocab_size) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && text[i] == ' ') ++i;
      size_t start = i;
      while (i < text.size() && text[i] != ' ') ++i;
      if (i == start) break;
      std::string_view word = text.substr(start, i - start);
      // Words that are not "w<number>" still count as one token, as a stub server would count them.
      int32_t id = 0;
      if (word.size() > 1 && word[0] == 'w') {
        for (char c : word.substr(1)) id = (c >= '0' && c <= '9') ? id * 10 + (c - '0') : 0;
      }
      ids.push_back(id % vocab_size_);
    }
    return ids;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    for (int32_t id : ids) {
      text += 'w';
      text += std::to_string(id);
      text += ' ';
    }
    return text;
  }

  int32_t vocab_size() const override { return vocab_size_; }
  bool is_special(int32_t) const override { return false; }
  std::string name() const override { return "builtin:words"; }

 private:
  int32_t vocab_size_;
};

// The real tokenizer of a model directory. Prompts are encoded without special tokens, as vLLM's
// random dataset counts them; the server adds its own (num_added_special_tokens).
class TokenizerCodec final : public TokenCodec {
 public:
  TokenizerCodec(std::unique_ptr<tokenizer::Tokenizer> tok, std::string dir)
      : tok_(std::move(tok)), dir_(std::move(dir)),
        num_added_(static_cast<int32_t>(tok_->encode("", /*add_special_tokens=*/true).size())) {}

  std::vector<int32_t> encode(std::string_view text) const override { return tok_->encode(text, false); }
  std::string decode(std::span<const int32_t> ids) const override { return tok_->decode(ids, false); }
  int32_t vocab_size() const override { return tok_->vocab_size(); }
  // Added tokens ("<think>", "<|im_start|>") would be cut out by the server as units; keep prompts to the
  // ordinary vocabulary, as a user's text would be.
  bool is_special(int32_t id) const override {
    return id >= ordinary_limit() || tok_->is_special(id) || !tok_->token_bytes(id).has_value();
  }
  int32_t num_added_special_tokens() const override { return num_added_; }
  std::string name() const override { return dir_; }

 private:
  // Added tokens sit at the end of the vocabulary in Qwen3 (151643..151668, some not "special", like
  // <think>) and Llama-3.1 (128000..128255): every id from the lowest special one in the last 2048 up
  // is kept out of prompts.
  int32_t ordinary_limit() const {
    if (limit_ < 0) {
      int32_t limit = tok_->vocab_size();
      for (int32_t id = tok_->vocab_size() - 1; id >= 0 && id >= tok_->vocab_size() - 2048; --id) {
        if (tok_->is_special(id)) limit = id;
      }
      limit_ = limit;
    }
    return limit_;
  }
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::string dir_;
  int32_t num_added_;
  mutable int32_t limit_ = -1;
};

}  // namespace

std::unique_ptr<TokenCodec> make_word_codec(int32_t vocab_size) {
  return std::make_unique<WordCodec>(vocab_size);
}

std::unique_ptr<TokenCodec> open_token_codec(const std::string& spec, const std::string& flag) {
  if (spec == "builtin:words") return make_word_codec();
  if (spec.empty()) {
    throw Error(flag + ": no tokenizer given; pass a directory holding tokenizer.json "
                "(e.g. data/tokenizers/qwen3), or builtin:words for stub servers");
  }
  std::filesystem::path dir(spec);
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    throw Error(flag + ": '" + spec + "' has no tokenizer.json (expected a model or tokenizer directory, "
                "or builtin:words)");
  }
  try {
    return std::make_unique<TokenizerCodec>(tokenizer::Tokenizer::load(spec), spec);
  } catch (const Error& e) {
    throw Error(flag + ": " + e.what());
  }
}

}  // namespace tandem::loadgen
