// Fuzz target: the real Qwen3 tokenizer (data/tokenizers/qwen3) on arbitrary bytes, invalid UTF-8
// included: encode (with and without special tokens), decode of the ids, and decode of arbitrary ids.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {
const tandem::tokenizer::Tokenizer& tokenizer() {
  static const auto t = tandem::tokenizer::Tokenizer::load(TANDEM_DATA_DIR "/tokenizers/qwen3");
  return *t;
}
}  // namespace

// Loading the 151k-token vocabulary takes seconds under ASan on a loaded machine: done here, before
// libFuzzer's per-input timeout starts counting (in the first input it read as a 10 s hang).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& tok = tokenizer();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ids = tok.encode(text, size % 2 == 0);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  }
  (void)tok.decode(ids, false);
  (void)tok.decode(ids, true);
  // The same bytes read as token ids, any value (out of range, negative) included.
  std::vector<int32_t> raw(size / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 4);
  (void)tok.decode(raw, size % 3 == 0);
  for (int32_t id : raw) {
    (void)tok.token_bytes(id);
    (void)tok.id_to_token(id);
    (void)tok.is_special(id);
  }
  (void)tok.token_to_id(text);
  return 0;
}
