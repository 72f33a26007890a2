// JSON text without a tree (see json_writer.h).
#include "frontend/json_writer.h"

#include <charconv>

#include "tokenizer/unicode.h"

namespace tandem::frontend {

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
      const size_t n = tokenizer::utf8_sequence_length(text, i);
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
