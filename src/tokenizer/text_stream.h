// Incremental detokenization: token ids in, text deltas out, for streaming responses. A delta
// never ends inside a UTF-8 character (bytes of an unfinished character wait for the next token),
// and the deltas concatenated, followed by finish(), equal Tokenizer::decode of all the ids.
// It fits the engine's TextStream interface (push(token_id) -> delta) as it is.
// Ownership: borrows the Tokenizer, which must outlive it. Thread-safety: one stream per sequence;
// a stream is not safe to use from two threads at once (distinct streams are independent).
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace tandem::tokenizer {

class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(&tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Feeds one token; returns the text it completes (possibly empty). Ids no token has are skipped,
  // as decode does; with skip_special_tokens, so are special tokens.
  std::string push(int32_t token_id);

  // Ends the stream: bytes of a character that never completed come out as U+FFFD, as decode
  // would give them. Returns the rest of the text (empty when nothing is pending).
  std::string finish();

  // Bytes held back waiting for the rest of a character (at most 3).
  size_t num_pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // the tail of an unfinished UTF-8 character
};

}  // namespace tandem::tokenizer
