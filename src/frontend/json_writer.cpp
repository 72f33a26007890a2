// JSON text without a tree (see json_writer.h).
#include "frontend/json_writer.h"

#include <charconv>

namespace tandem::frontend {

namespace {

// Length of the UTF-8 sequence at `s` (whose first byte is >= 0x80), or 0 if it is not a valid one by
// RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF (what nlohmann's decoder accepts).
size_t utf8_sequence_length(const unsigned char* s, size_t left) {
  const unsigned char b = s[0];
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    n = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (left < n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; ++i) {
    if ((s[i] & 0xC0) != 0x80) return 0;
  }
  return n;
}

}  // namespace

void append_json_string(std::string* out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t size = text.size();
  const size_t start = out->size();
  out->reserve(start + size + 2);
  out->push_back('"');
  size_t i = 0;
  while (i < size) {
    // The run of bytes that are copied as they are.
    size_t j = i;
    while (j < size && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\') ++j;
    out->append(text.data() + i, j - i);
    i = j;
    if (i == size) break;
    const unsigned char c = s[i];
    if (c >= 0x80) {
      const size_t n = utf8_sequence_length(s + i, size - i);
      if (n == 0) {
        out->resize(start);
        out->append(nlohmann::json(std::string(text)).dump());  // throws type_error 316, as dump() does
        return;
      }
      out->append(text.data() + i, n);
      i += n;
      continue;
    }
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default: {
        const char escaped[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out->append(escaped, sizeof(escaped));
      }
    }
    ++i;
  }
  out->push_back('"');
}

void append_json_int(std::string* out, int64_t value) {
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof(digits), value).ptr;
  out->append(digits, end);
}

void append_json(std::string* out, const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null: out->append("null"); return;
    case nlohmann::json::value_t::boolean: out->append(value.get<bool>() ? "true" : "false"); return;
    case nlohmann::json::value_t::number_integer: append_json_int(out, value.get<int64_t>()); return;
    case nlohmann::json::value_t::string: append_json_string(out, value.get_ref<const std::string&>()); return;
    case nlohmann::json::value_t::array: {
      out->push_back('[');
      bool first = true;
      for (const auto& element : value) {
        if (!first) out->push_back(',');
        first = false;
        append_json(out, element);
      }
      out->push_back(']');
      return;
    }
    case nlohmann::json::value_t::object: {
      out->push_back('{');
      bool first = true;
      for (const auto& [key, element] : value.items()) {
        if (!first) out->push_back(',');
        first = false;
        append_json_string(out, key);
        out->push_back(':');
        append_json(out, element);
      }
      out->push_back('}');
      return;
    }
    default:  // unsigned, floating point (nlohmann's own shortest round-trip form), binary, discarded
      out->append(value.dump());
      return;
  }
}

}  // namespace tandem::frontend
