#include "tokenizer/jinja/value.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {

const Value* DictData::find(const std::string& key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void DictData::set(const std::string& key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Value v = list();
      for (const auto& item : j) v.list_->items.push_back(from_json(item));
      return v;
    }
    case nlohmann::ordered_json::value_t::object: {
      Value v = dict();
      for (const auto& [key, item] : j.items()) v.dict_->items.emplace_back(key, from_json(item));
      return v;
    }
    default: return none();
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return false;
    case Kind::kBool: case Kind::kInt: return int_ != 0;
    case Kind::kFloat: return float_ != 0.0;
    case Kind::kString: return !str_.empty();
    case Kind::kList: return !list_->items.empty();
    case Kind::kDict: return !dict_->items.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return list_->is_tuple ? "tuple" : "list";
    case Kind::kDict: return dict_->is_namespace ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e_pos; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exponent = std::stoi(sci.substr(e_pos + 1));
  const int decpt = exponent + 1;  // value = 0.digits * 10^decpt
  const int n = static_cast<int>(digits.size());
  std::string out;
  if (decpt > 16 || decpt < -3) {
    out = digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof(e), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += e;
  } else if (decpt <= 0) {
    out = "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (decpt < n) {
    out = digits.substr(0, static_cast<size_t>(decpt)) + "." + digits.substr(static_cast<size_t>(decpt));
  } else {
    out = digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
  }
  return sign + out;
}

namespace {

bool python_printable(char32_t cp) {
  if (cp == ' ') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS: case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

std::string string_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  const std::string text = utf8_lossy(s);
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = next_code_point(text, &pos);
    char buf[16];
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!python_printable(cp)) {
      if (cp < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(cp));
      } else if (cp < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(cp));
      }
      out += buf;
    } else {
      out.append(text, start, pos - start);
    }
  }
  out += quote;
  return out;
}

// Python's json encoder: \" \\ \n \r \t \b \f, other controls as \u00XX; with ensure_ascii every
// non-ASCII code point as \uXXXX (a surrogate pair above the BMP), else the UTF-8 as is.
void json_string(const std::string& s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  const std::string text = ensure_ascii ? utf8_lossy(s) : s;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto u = static_cast<unsigned char>(text[pos]);
    char buf[16];
    if (u >= 0x80) {
      if (!ensure_ascii) {
        out->push_back(text[pos++]);
        continue;
      }
      const char32_t cp = next_code_point(text, &pos);
      if (cp < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      } else {
        const char32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      }
      *out += buf;
      continue;
    }
    ++pos;
    switch (u) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (u < 0x20) {
          std::snprintf(buf, sizeof(buf), "\\u%04x", u);
          *out += buf;
        } else {
          out->push_back(static_cast<char>(u));
        }
    }
  }
  out->push_back('"');
}

void to_json_impl(const Value& v, int indent, int depth, const std::string& item_sep, const std::string& key_sep,
                  bool sort_keys, bool ensure_ascii, std::string* out) {
  const auto newline = [&](int d) {
    out->push_back('\n');
    out->append(static_cast<size_t>(indent * d), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::kNone: *out += "null"; return;
    case Value::Kind::kBool: *out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::kInt: *out += std::to_string(v.as_int()); return;
    case Value::Kind::kFloat: {
      const double d = v.as_float();
      if (std::isnan(d)) *out += "NaN";
      else if (std::isinf(d)) *out += d > 0 ? "Infinity" : "-Infinity";
      else *out += python_float_repr(d);
      return;
    }
    case Value::Kind::kString: json_string(v.as_string(), ensure_ascii, out); return;
    case Value::Kind::kList: {
      const auto& items = v.list_data().items;
      if (items.empty()) {
        *out += "[]";
        return;
      }
      out->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        if (indent >= 0) newline(depth + 1);
        to_json_impl(items[i], indent, depth + 1, item_sep, key_sep, sort_keys, ensure_ascii, out);
      }
      if (indent >= 0) newline(depth);
      out->push_back(']');
      return;
    }
    case Value::Kind::kDict: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : v.dict_data().items) items.push_back(&item);
      if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      if (items.empty()) {
        *out += "{}";
        return;
      }
      out->push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) *out += item_sep;
        if (indent >= 0) newline(depth + 1);
        json_string(items[i]->first, ensure_ascii, out);
        *out += key_sep;
        to_json_impl(items[i]->second, indent, depth + 1, item_sep, key_sep, sort_keys, ensure_ascii, out);
      }
      if (indent >= 0) newline(depth);
      out->push_back('}');
      return;
    }
    case Value::Kind::kUndefined:
      throw TemplateError("Object of type Undefined is not JSON serializable", 0);
    case Value::Kind::kFunction:
      throw TemplateError("Object of type function is not JSON serializable", 0);
  }
}

}  // namespace

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return int_ ? "True" : "False";
    case Kind::kInt: return std::to_string(int_);
    case Kind::kFloat: return python_float_repr(float_);
    case Kind::kString: return str_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kString: return string_repr(str_);
    case Kind::kList: {
      std::string out = list_->is_tuple ? "(" : "[";
      for (size_t i = 0; i < list_->items.size(); ++i) {
        if (i > 0) out += ", ";
        out += list_->items[i].repr();
      }
      if (list_->is_tuple && list_->items.size() == 1) out += ",";
      out += list_->is_tuple ? ")" : "]";
      return out;
    }
    case Kind::kDict: {
      if (dict_->is_namespace) return "<Namespace>";
      std::string out = "{";
      for (size_t i = 0; i < dict_->items.size(); ++i) {
        if (i > 0) out += ", ";
        out += string_repr(dict_->items[i].first) + ": " + dict_->items[i].second.repr();
      }
      return out + "}";
    }
    case Kind::kFunction: return "<function " + fn_->name + ">";
    case Kind::kUndefined: return "Undefined";
    default: return str();
  }
}

std::string Value::to_json(int indent, const std::string& item_separator, const std::string& key_separator,
                           bool sort_keys, bool ensure_ascii) const {
  std::string out;
  to_json_impl(*this, indent, 0, item_separator, key_separator, sort_keys, ensure_ascii, &out);
  return out;
}

bool Value::equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (kind_ == Kind::kFloat || other.kind_ == Kind::kFloat) return as_float() == other.as_float();
    return int_ == other.int_;
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return true;
    case Kind::kString: return str_ == other.str_;
    case Kind::kList: {
      if (list_->is_tuple != other.list_->is_tuple || list_->items.size() != other.list_->items.size()) return false;
      for (size_t i = 0; i < list_->items.size(); ++i)
        if (!list_->items[i].equals(other.list_->items[i])) return false;
      return true;
    }
    case Kind::kDict: {
      if (dict_->items.size() != other.dict_->items.size()) return false;
      for (const auto& [k, v] : dict_->items) {
        const Value* o = other.dict_->find(k);
        if (o == nullptr || !v.equals(*o)) return false;
      }
      return true;
    }
    case Kind::kFunction: return fn_ == other.fn_;
    default: return false;
  }
}

bool Value::less_than(const Value& other, int line) const {
  if (is_number() && other.is_number()) {
    if (kind_ == Kind::kFloat || other.kind_ == Kind::kFloat) return as_float() < other.as_float();
    return int_ < other.int_;
  }
  if (is_string() && other.is_string()) return str_ < other.str_;
  if (is_list() && other.is_list()) {
    const auto& a = list_->items;
    const auto& b = other.list_->items;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (a[i].less_than(b[i], line)) return true;
      if (b[i].less_than(a[i], line)) return false;
    }
    return a.size() < b.size();
  }
  throw TemplateError("'<' not supported between instances of '" + type_name() + "' and '" + other.type_name() + "'", line);
}

bool Value::same_as(const Value& other) const {
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kList: return list_ == other.list_;
    case Kind::kDict: return dict_ == other.dict_;
    case Kind::kFunction: return fn_ == other.fn_;
    default: return equals(other);
  }
}

}  // namespace tandem::tokenizer::jinja
