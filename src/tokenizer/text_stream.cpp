#include "tokenizer/text_stream.h"

#include "tokenizer/unicode.h"

namespace tandem::tokenizer {

std::string StreamingDetokenizer::push(int32_t token_id) {
  std::string delta;
  if (skip_special_tokens_ && tokenizer_->is_special(token_id)) return delta;
  auto bytes = tokenizer_->token_bytes(token_id);
  if (!bytes) return delta;
  pending_.append(*bytes);
  const size_t used = utf8_lossy_prefix(pending_, &delta);
  pending_.erase(0, used);
  return delta;
}

std::string StreamingDetokenizer::finish() {
  std::string rest = utf8_lossy(pending_);
  pending_.clear();
  return rest;
}

}  // namespace tandem::tokenizer
