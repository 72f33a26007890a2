// Token codecs for the benchmark: the word codec for stub servers, and the lookup of a real one.
#include "bench/token_codec.h"

#include <filesystem>

#include "common/error.h"

namespace tandem::bench {
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
  throw Error(flag + ": '" + spec + "': real tokenizers are not built into this tandem yet; "
              "use builtin:words against stub servers");
}

}  // namespace tandem::bench
