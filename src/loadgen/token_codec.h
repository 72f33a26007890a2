// TokenCodec: the little of a tokenizer that the benchmark needs (encode, decode, vocabulary size), so
// that prompts can be built from token ids and the server sees the asked number of tokens.
// The benchmark never depends on a concrete tokenizer: tests inject a fake, the CLI opens one by name.
// Thread-safety: implementations are immutable after construction; const methods may be called from
// any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::loadgen {

class TokenCodec {
 public:
  virtual ~TokenCodec() = default;
  // Token ids of text as the server's tokenizer would produce them, without special tokens.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // Ids in [0, vocab_size()) that are ordinary (non-special) tokens may be sampled for prompts.
  virtual int32_t vocab_size() const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // Tokens a server adds when it encodes a completion prompt (Llama-3.1's <|begin_of_text|>: 1; Qwen3: 0),
  // so the prompt length can be checked against the server's usage.
  virtual int32_t num_added_special_tokens() const { return 0; }
  // A short name for the result file ("words", a tokenizer directory).
  virtual std::string name() const = 0;
};

// A codec whose token i is the word "w<i>" followed by a space; encode splits on whitespace.
// For stub servers that count whitespace-separated words as tokens; never for a real model.
std::unique_ptr<TokenCodec> make_word_codec(int32_t vocab_size = 32000);

// Opens a codec by spec: "builtin:words", or a directory holding tokenizer.json (a Hugging Face
// model or tokenizer directory, read by tandem::tokenizer). Throws tandem::Error naming `flag` when it
// cannot.
std::unique_ptr<TokenCodec> open_token_codec(const std::string& spec, const std::string& flag);

}  // namespace tandem::loadgen
