// UTF-8 helpers shared by the tokenizer and the chat templates: lossy validation, NFC, and the
// character classes Hugging Face's tokenizers take from Rust's `char` (whitespace, alphanumeric).
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/utf8.h"  // append_utf8

namespace tandem::tokenizer {

// Length of the longest prefix of `bytes` that is complete, valid UTF-8. A caller streaming bytes
// holds back the rest until more arrive.
size_t valid_utf8_prefix(std::string_view bytes);

// Length of the well-formed UTF-8 sequence at bytes[pos] (1 for ASCII), 0 when it is ill-formed or cut
// short (overlong forms, surrogates and code points above U+10FFFF are ill-formed).
size_t utf8_sequence_length(std::string_view bytes, size_t pos);

// True when the sequence at `bytes` is an incomplete but so far valid UTF-8 character (more bytes
// could complete it). Used to tell "wait for more" from "invalid".
bool is_incomplete_utf8_tail(std::string_view bytes);

// `bytes` with every ill-formed subsequence replaced by U+FFFD, one per maximal subpart (Unicode
// §3.9 "U+FFFD substitution of maximal subparts"): the rule of Rust's String::from_utf8_lossy,
// Python's bytes.decode(errors="replace") and the WHATWG TextDecoder.
std::string utf8_lossy(std::string_view bytes);

// Appends to *out the lossy conversion (as utf8_lossy) of the longest prefix of `bytes` that does
// not end in an incomplete character, and returns that prefix's length. The rest waits for more
// bytes; converting chunk by chunk this way gives the same text as utf8_lossy of the whole.
size_t utf8_lossy_prefix(std::string_view bytes, std::string* out);

// Decodes one code point at `bytes[*pos]` and advances *pos. REQUIRES: valid UTF-8 at *pos.
char32_t next_code_point(std::string_view bytes, size_t* pos);

// Unicode NFC (utf8proc on the stretches that can change). REQUIRES: valid UTF-8.
std::string nfc(std::string_view text);

// True when `text` is certainly in NFC already, so nfc() would return it unchanged: every code
// point is stable under NFC (a starter that neither decomposes canonically nor is the second
// element of a composition: ASCII, CJK, emoji, most letters). False means "maybe": normalize.
// REQUIRES: valid UTF-8.
bool is_nfc_quick(std::string_view text);

// Rust's char::is_whitespace (the White_Space property) and char::is_alphanumeric
// (Alphabetic or Numeric: general categories L*, Nl, Nd, No plus Other_Alphabetic marks).
bool is_whitespace(char32_t cp);
bool is_alphanumeric(char32_t cp);

}  // namespace tandem::tokenizer
