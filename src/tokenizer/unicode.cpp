// UTF-8 validation and replacement follow Unicode 15 §3.9, Table 3-7 (well-formed byte sequences).
#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>

#include "common/error.h"

namespace tandem::tokenizer {
namespace {

// Length of the valid sequence at bytes[pos], 0 when it is ill-formed or cut short; *maximal_subpart
// gets how many bytes form the maximal subpart (the prefix of a valid sequence) in the failing case.
size_t sequence_length(std::string_view bytes, size_t pos, size_t* maximal_subpart) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(bytes[pos + i]); };
  const size_t avail = bytes.size() - pos;
  const uint8_t b0 = b(0);
  *maximal_subpart = 1;
  if (b0 < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= avail) return 0;
    const uint8_t c = b(i);
    const bool ok = (i == 1) ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return 0;
    *maximal_subpart = i + 1;
  }
  return need;
}

}  // namespace

size_t utf8_sequence_length(std::string_view bytes, size_t pos) {
  size_t subpart;
  return sequence_length(bytes, pos, &subpart);
}

size_t valid_utf8_prefix(std::string_view bytes) {
  size_t pos = 0, subpart;
  while (pos < bytes.size()) {
    size_t n = sequence_length(bytes, pos, &subpart);
    if (n == 0) break;
    pos += n;
  }
  return pos;
}

bool is_incomplete_utf8_tail(std::string_view bytes) {
  if (bytes.empty()) return false;
  size_t subpart;
  size_t n = sequence_length(bytes, 0, &subpart);
  // Ill-formed only because it ran out of bytes: every byte present belongs to the subpart.
  return n == 0 && subpart == bytes.size() && static_cast<uint8_t>(bytes[0]) >= 0xC2;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0, subpart;
  while (pos < bytes.size()) {
    size_t n = sequence_length(bytes, pos, &subpart);
    if (n > 0) {
      out.append(bytes.substr(pos, n));
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");
      pos += subpart;
    }
  }
  return out;
}

size_t utf8_lossy_prefix(std::string_view bytes, std::string* out) {
  size_t pos = 0, subpart;
  while (pos < bytes.size()) {
    size_t n = sequence_length(bytes, pos, &subpart);
    if (n > 0) {
      out->append(bytes.substr(pos, n));
      pos += n;
    } else if (is_incomplete_utf8_tail(bytes.substr(pos))) {
      break;
    } else {
      out->append("\xEF\xBF\xBD");
      pos += subpart;
    }
  }
  return pos;
}

char32_t next_code_point(std::string_view s, size_t* pos) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[*pos + i]); };
  const uint8_t b0 = b(0);
  char32_t cp;
  if (b0 < 0x80) {
    cp = b0;
    *pos += 1;
  } else if (b0 < 0xE0) {
    cp = ((b0 & 0x1F) << 6) | (b(1) & 0x3F);
    *pos += 2;
  } else if (b0 < 0xF0) {
    cp = ((b0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    *pos += 3;
  } else {
    cp = ((b0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    *pos += 4;
  }
  return cp;
}

namespace {

// True when no NFC step can change `cp` or look across it: a starter (ccc 0) that has no canonical
// decomposition and is never the second element of a composition (utf8proc flags those with
// 0x8000 in comb_index). It may still be the first element of one (e, or Arabic alef), but then
// the second element that follows is not stable itself. Text can be normalized piecewise at the
// start of every stable code point (UAX #15 §9, "Detecting Normalization Forms").
bool stable_in_nfc(char32_t cp) {
  // Below U+0300 there are no combining marks and no second elements; the precomposed letters
  // there are their own NFC.
  if (cp < 0x300) return true;
  // Hangul jamo compose algorithmically (Unicode §3.12), outside utf8proc's tables.
  if ((cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xD7B0 && cp <= 0xD7FF)) return false;
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
  const bool canonical_decomposition = p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0;
  const bool second_of_pair = p->comb_index != UINT16_MAX && (p->comb_index & 0x8000) != 0;
  return p->combining_class == 0 && !canonical_decomposition && !second_of_pair;
}

void append_nfc(std::string_view chunk, std::string* out) {
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(chunk.data()),
                                          static_cast<utf8proc_ssize_t>(chunk.size()), &mapped,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw Error(std::string("NFC normalization failed: ") + utf8proc_errmsg(n));
  out->append(reinterpret_cast<char*>(mapped), static_cast<size_t>(n));
  std::free(mapped);
}

}  // namespace

std::string nfc(std::string_view text) {
  // Only the stretches from a stable code point up to the next one that hold something unstable
  // go through utf8proc; most text (ASCII, CJK, emoji, precomposed Latin) is copied as is.
  std::string out;
  out.reserve(text.size());
  size_t chunk_start = 0, pos = 0;
  bool dirty = false;
  while (pos < text.size()) {
    const size_t at = pos;
    char32_t cp;
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      cp = static_cast<uint8_t>(text[pos++]);
    } else {
      cp = next_code_point(text, &pos);
    }
    if (stable_in_nfc(cp)) {
      if (dirty) {
        append_nfc(text.substr(chunk_start, at - chunk_start), &out);
      } else {
        out.append(text.substr(chunk_start, at - chunk_start));
      }
      chunk_start = at;
      dirty = false;
    } else {
      dirty = true;
    }
  }
  if (dirty) {
    append_nfc(text.substr(chunk_start), &out);
  } else {
    out.append(text.substr(chunk_start));
  }
  return out;
}

bool is_nfc_quick(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    if (!stable_in_nfc(next_code_point(text, &pos))) return false;
  }
  return true;
}

bool is_whitespace(char32_t cp) {
  // The White_Space property (PropList.txt), which Rust's char::is_whitespace implements.
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_alphanumeric(char32_t cp) {
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      // Other_Alphabetic marks (Mn/Mc such as Devanagari vowel signs) are Alphabetic in Rust too; utf8proc
      // has no property for them, so they count as not alphanumeric here. Only single_word tokens use
      // this, and neither Qwen3 nor Llama-3.1 has one.
      return false;
  }
}

}  // namespace tandem::tokenizer
