#include "tokenizer/jinja/builtins.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {

[[noreturn]] void fail(const std::string& message, int line) { throw TemplateError(message, line); }

[[noreturn]] void fail_undefined(const Value& v, int line) {
  fail("'" + v.undefined_name() + "' is undefined", line);
}

int ordered(const Value& a, const Value& b, int line) {
  if (a.is_undefined()) fail_undefined(a, line);
  if (b.is_undefined()) fail_undefined(b, line);
  if (a.less_than(b, line)) return -1;
  if (b.less_than(a, line)) return 1;
  return 0;
}

// ---- string helpers with Python's semantics (code points, Unicode whitespace) ----

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  const std::string valid = utf8_lossy(s);
  size_t pos = 0;
  while (pos < valid.size()) out.push_back(next_code_point(valid, &pos));
  return out;
}

std::string from_u32(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) append_utf8(c, &out);
  return out;
}

// Python's str.isspace().
bool py_isspace(char32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0) return true;
  if (c < 0x80) return false;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

std::string py_strip(const std::string& s, const Value* chars, bool left, bool right) {
  const std::u32string text = to_u32(s);
  std::u32string set;
  const bool by_space = chars == nullptr || chars->is_none() || chars->is_undefined();
  if (!by_space) set = to_u32(chars->as_string());
  auto strip_it = [&](char32_t c) { return by_space ? py_isspace(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = text.size();
  if (left)
    while (b < e && strip_it(text[b])) ++b;
  if (right)
    while (e > b && strip_it(text[e - 1])) --e;
  return from_u32(text.substr(b, e - b));
}

// Python's str.upper()/lower() use the full case mappings (SpecialCasing.txt); utf8proc has only
// the simple ones, so the unconditional multi-character mappings of Latin text are added here.
std::string map_case(const std::string& s, bool upper) {
  std::string out;
  for (char32_t c : to_u32(s)) {
    if (upper) {
      switch (c) {
        case 0xDF: out += "SS"; continue;
        case 0xFB00: out += "FF"; continue;
        case 0xFB01: out += "FI"; continue;
        case 0xFB02: out += "FL"; continue;
        case 0xFB03: out += "FFI"; continue;
        case 0xFB04: out += "FFL"; continue;
        case 0xFB05: case 0xFB06: out += "ST"; continue;
        case 0x149: out += "\u02BCN"; continue;
        default: break;
      }
    } else if (c == 0x130) {
      out += "i\u0307";
      continue;
    }
    const auto m = upper ? utf8proc_toupper(static_cast<utf8proc_int32_t>(c)) : utf8proc_tolower(static_cast<utf8proc_int32_t>(c));
    append_utf8(static_cast<char32_t>(m), &out);
  }
  return out;
}

// Python's float(str): decimal digits with optional sign, point, exponent and single underscores
// between digits, or inf/infinity/nan; surrounding whitespace allowed. No hex (strtod takes 0x1A).
std::optional<double> py_float(const std::string& text) {
  std::string s = py_strip(text, nullptr, true, true);
  std::string lower = map_case(s, false);
  const std::string unsigned_part = (!lower.empty() && (lower[0] == '+' || lower[0] == '-')) ? lower.substr(1) : lower;
  if (unsigned_part == "inf" || unsigned_part == "infinity" || unsigned_part == "nan") return std::stod(lower);
  std::string digits;
  bool seen_digit = false, seen_point = false, seen_exp = false, prev_digit = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      seen_digit = true;
      prev_digit = true;
      digits += c;
      continue;
    }
    if (c == '_' && prev_digit && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') continue;
    prev_digit = false;
    if ((c == '+' || c == '-') && (i == 0 || s[i - 1] == 'e' || s[i - 1] == 'E')) {
      digits += c;
    } else if (c == '.' && !seen_point && !seen_exp) {
      seen_point = true;
      digits += c;
    } else if ((c == 'e' || c == 'E') && seen_digit && !seen_exp && i + 1 < s.size()) {
      seen_exp = true;
      digits += c;
    } else {
      return std::nullopt;
    }
  }
  if (!seen_digit || digits.back() == 'e' || digits.back() == 'E' || digits.back() == '+' || digits.back() == '-') return std::nullopt;
  return std::strtod(digits.c_str(), nullptr);
}

static bool is_cased_letter(char32_t c) {
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (char32_t c : to_u32(s)) {
    const auto m = prev_cased ? utf8proc_tolower(static_cast<utf8proc_int32_t>(c)) : utf8proc_totitle(static_cast<utf8proc_int32_t>(c));
    append_utf8(static_cast<char32_t>(m), &out);
    prev_cased = is_cased_letter(c);
  }
  return out;
}

std::string py_capitalize(const std::string& s) {
  std::u32string t = to_u32(s);
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    const auto m = i == 0 ? utf8proc_totitle(static_cast<utf8proc_int32_t>(t[i])) : utf8proc_tolower(static_cast<utf8proc_int32_t>(t[i]));
    append_utf8(static_cast<char32_t>(m), &out);
  }
  return out;
}

std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit, int line) {
  std::vector<Value> out;
  if (sep == nullptr || sep->is_none()) {
    const std::u32string t = to_u32(s);
    size_t i = 0;
    while (true) {
      while (i < t.size() && py_isspace(t[i])) ++i;
      if (i >= t.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
        size_t e = t.size();
        while (e > i && py_isspace(t[e - 1])) --e;
        out.push_back(Value::string(from_u32(t.substr(i, e - i))));
        break;
      }
      size_t j = i;
      while (j < t.size() && !py_isspace(t[j])) ++j;
      out.push_back(Value::string(from_u32(t.substr(i, j - i))));
      i = j;
    }
    return out;
  }
  if (!sep->is_string()) fail("must be str or None, not " + sep->type_name(), line);
  const std::string& d = sep->as_string();
  if (d.empty()) fail("empty separator", line);
  size_t start = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) break;
    const size_t found = s.find(d, start);
    if (found == std::string::npos) break;
    out.push_back(Value::string(s.substr(start, found - start)));
    start = found + d.size();
  }
  out.push_back(Value::string(s.substr(start)));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  if (old.empty()) {
    // Python inserts `repl` between every character (and at both ends).
    std::string out;
    const std::u32string t = to_u32(s);
    int64_t n = 0;
    for (size_t i = 0; i <= t.size(); ++i) {
      if (count < 0 || n < count) {
        out += repl;
        ++n;
      }
      if (i < t.size()) append_utf8(t[i], &out);
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    const size_t found = s.find(old, start);
    if (found == std::string::npos) break;
    out.append(s, start, found - start);
    out += repl;
    start = found + old.size();
    ++n;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> lines;
  const std::u32string t = to_u32(s);
  std::u32string cur;
  for (size_t i = 0; i < t.size(); ++i) {
    const char32_t c = t[i];
    const bool br = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                    c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!br) {
      cur.push_back(c);
      continue;
    }
    if (c == '\r' && i + 1 < t.size() && t[i + 1] == '\n') ++i;
    lines.push_back(from_u32(cur));
    cur.clear();
  }
  if (!cur.empty()) lines.push_back(from_u32(cur));
  return lines;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}


// Items of an iterable value as Python's iter() yields them.
std::vector<Value> iterate(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return {};
    case Value::Kind::kList: return v.list_data().items;
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& [k, _] : v.dict_data().items) keys.push_back(Value::string(k));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t c : to_u32(v.as_string())) chars.push_back(Value::string(from_u32(std::u32string(1, c))));
      return chars;
    }
    default: fail("'" + v.type_name() + "' object is not iterable", line);
  }
}

int64_t py_len(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return 0;
    case Value::Kind::kString: return static_cast<int64_t>(to_u32(v.as_string()).size());
    case Value::Kind::kList: return static_cast<int64_t>(v.list_data().items.size());
    case Value::Kind::kDict: return static_cast<int64_t>(v.dict_data().items.size());
    default: fail("object of type '" + v.type_name() + "' has no len()", line);
  }
}

bool contains(const Value& container, const Value& item, int line) {
  switch (container.kind()) {
    case Value::Kind::kUndefined: return false;
    case Value::Kind::kString:
      if (!item.is_string()) fail("'in <string>' requires string as left operand, not " + item.type_name(), line);
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::kList:
      for (const auto& v : container.list_data().items)
        if (v.equals(item)) return true;
      return false;
    case Value::Kind::kDict:
      return item.is_string() && container.dict_data().find(item.as_string()) != nullptr;
    default:
      fail("argument of type '" + container.type_name() + "' is not iterable", line);
  }
}


static Value make_method(const Value& self, const std::string& name, std::function<Value(const Value&, CallArgs&)> fn) {
  return Value::function(name, [self, fn](CallArgs& args) { return fn(self, args); });
}

static bool prefix_match(const std::string& s, const Value& arg, bool suffix, int line) {
  auto one = [&](const Value& p) {
    if (!p.is_string()) fail("startswith/endswith first arg must be str or a tuple of str", line);
    const std::string& x = p.as_string();
    if (x.size() > s.size()) return false;
    return suffix ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (arg.is_list()) {
    for (const auto& p : arg.list_data().items)
      if (one(p)) return true;
    return false;
  }
  return one(arg);
}

static Value string_method(const Value& self, const std::string& name) {
  using F = std::function<Value(const Value&, CallArgs&)>;
  static const std::unordered_map<std::string, F> kMethods = {
      {"startswith", [](const Value& s, CallArgs& c) { Args a(c, "startswith", {"prefix"}); return Value::boolean(prefix_match(s.as_string(), a.required(0), false, c.line)); }},
      {"endswith", [](const Value& s, CallArgs& c) { Args a(c, "endswith", {"suffix"}); return Value::boolean(prefix_match(s.as_string(), a.required(0), true, c.line)); }},
      {"strip", [](const Value& s, CallArgs& c) { Args a(c, "strip", {"chars"}); return Value::string(py_strip(s.as_string(), a.get(0), true, true)); }},
      {"lstrip", [](const Value& s, CallArgs& c) { Args a(c, "lstrip", {"chars"}); return Value::string(py_strip(s.as_string(), a.get(0), true, false)); }},
      {"rstrip", [](const Value& s, CallArgs& c) { Args a(c, "rstrip", {"chars"}); return Value::string(py_strip(s.as_string(), a.get(0), false, true)); }},
      {"split", [](const Value& s, CallArgs& c) {
         Args a(c, "split", {"sep", "maxsplit"});
         return Value::list(py_split(s.as_string(), a.get(0), a.get_or(1, Value::integer(-1)).as_int(), c.line));
       }},
      {"upper", [](const Value& s, CallArgs& c) { Args a(c, "upper", {}); return Value::string(map_case(s.as_string(), true)); }},
      {"lower", [](const Value& s, CallArgs& c) { Args a(c, "lower", {}); return Value::string(map_case(s.as_string(), false)); }},
      {"title", [](const Value& s, CallArgs& c) { Args a(c, "title", {}); return Value::string(py_title(s.as_string())); }},
      {"capitalize", [](const Value& s, CallArgs& c) { Args a(c, "capitalize", {}); return Value::string(py_capitalize(s.as_string())); }},
      {"replace", [](const Value& s, CallArgs& c) {
         Args a(c, "replace", {"old", "new", "count"});
         return Value::string(py_replace(s.as_string(), a.string(0), a.string(1), a.get_or(2, Value::integer(-1)).as_int()));
       }},
      {"find", [](const Value& s, CallArgs& c) {
         Args a(c, "find", {"sub"});
         const size_t pos = s.as_string().find(a.string(0));
         if (pos == std::string::npos) return Value::integer(-1);
         return Value::integer(static_cast<int64_t>(to_u32(s.as_string().substr(0, pos)).size()));
       }},
      {"count", [](const Value& s, CallArgs& c) {
         Args a(c, "count", {"sub"});
         const std::string& sub = a.string(0);
         if (sub.empty()) return Value::integer(static_cast<int64_t>(to_u32(s.as_string()).size()) + 1);
         int64_t n = 0;
         for (size_t p = s.as_string().find(sub); p != std::string::npos; p = s.as_string().find(sub, p + sub.size())) ++n;
         return Value::integer(n);
       }},
      {"join", [](const Value& s, CallArgs& c) {
         Args a(c, "join", {"iterable"});
         std::string out;
         bool first = true;
         for (const auto& item : iterate(a.required(0), c.line)) {
           if (!item.is_string()) fail("sequence item: expected str instance, " + item.type_name() + " found", c.line);
           if (!first) out += s.as_string();
           out += item.as_string();
           first = false;
         }
         return Value::string(out);
       }},
      {"splitlines", [](const Value& s, CallArgs& c) {
         Args a(c, "splitlines", {});
         std::vector<Value> out;
         for (auto& l : py_splitlines(s.as_string())) out.push_back(Value::string(l));
         return Value::list(out);
       }},
      {"isdigit", [](const Value& s, CallArgs& c) {
         Args a(c, "isdigit", {});
         const auto t = to_u32(s.as_string());
         return Value::boolean(!t.empty() && std::all_of(t.begin(), t.end(), [](char32_t ch) { return ch >= '0' && ch <= '9'; }));
       }},
      {"isspace", [](const Value& s, CallArgs& c) {
         Args a(c, "isspace", {});
         const auto t = to_u32(s.as_string());
         return Value::boolean(!t.empty() && std::all_of(t.begin(), t.end(), py_isspace));
       }},
  };
  auto it = kMethods.find(name);
  if (it == kMethods.end()) return Value::undefined(name);
  return make_method(self, name, it->second);
}

static Value dict_method(const Value& self, const std::string& name) {
  if (name == "items") {
    return make_method(self, name, [](const Value& d, CallArgs& c) {
      Args a(c, "items", {});
      std::vector<Value> out;
      for (const auto& [k, v] : d.dict_data().items) out.push_back(Value::list({Value::string(k), v}, true));
      return Value::list(out);
    });
  }
  if (name == "keys" || name == "values") {
    const bool keys = name == "keys";
    return make_method(self, name, [keys](const Value& d, CallArgs& c) {
      Args a(c, keys ? "keys" : "values", {});
      std::vector<Value> out;
      for (const auto& [k, v] : d.dict_data().items) out.push_back(keys ? Value::string(k) : v);
      return Value::list(out);
    });
  }
  if (name == "get") {
    return make_method(self, name, [](const Value& d, CallArgs& c) {
      Args a(c, "get", {"key", "default"});
      const Value& key = a.required(0);
      const Value* v = key.is_string() ? d.dict_data().find(key.as_string()) : nullptr;
      return v ? *v : a.get_or(1, Value::none());
    });
  }
  static const char* const kMutating[] = {"pop", "popitem", "update", "clear", "setdefault", "copy"};
  for (const char* m : kMutating) {
    if (name == m) {
      return make_method(self, name, [name](const Value&, CallArgs& c) -> Value {
        fail("unsupported construct: dict." + name + "() (templates cannot modify values)", c.line);
      });
    }
  }
  return Value::undefined(name);
}

static Value list_method(const Value& self, const std::string& name) {
  static const char* const kMutating[] = {"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"};
  for (const char* m : kMutating) {
    if (name == m) {
      return make_method(self, name, [name](const Value&, CallArgs& c) -> Value {
        fail("unsupported construct: list." + name + "() (templates cannot modify values)", c.line);
      });
    }
  }
  return Value::undefined(name);
}

// Jinja2's environment.getattr: the attribute (method) first, then the item.
Value get_attr(const Value& obj, const std::string& name, int line) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined: fail_undefined(obj, line);
    case Value::Kind::kDict: {
      if (!obj.dict_data().is_namespace) {
        Value method = dict_method(obj, name);
        if (!method.is_undefined()) return method;
      }
      const Value* v = obj.dict_data().find(name);
      return v ? *v : Value::undefined(name);
    }
    case Value::Kind::kString: return string_method(obj, name);
    case Value::Kind::kList: return list_method(obj, name);
    default: return Value::undefined(name);
  }
}

// Jinja2's environment.getitem: the item first, then (for string keys) the attribute.
Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) fail_undefined(obj, line);
  if (obj.is_dict()) {
    if (key.is_string()) {
      if (const Value* v = obj.dict_data().find(key.as_string())) return *v;
      return get_attr(obj, key.as_string(), line);
    }
    return Value::undefined(key.str());
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      const auto& items = obj.list_data().items;
      if (i < 0) i += static_cast<int64_t>(items.size());
      if (i < 0 || i >= static_cast<int64_t>(items.size())) return Value::undefined("[" + key.str() + "]");
      return items[static_cast<size_t>(i)];
    }
    const std::u32string t = to_u32(obj.as_string());
    if (i < 0) i += static_cast<int64_t>(t.size());
    if (i < 0 || i >= static_cast<int64_t>(t.size())) return Value::undefined("[" + key.str() + "]");
    return Value::string(from_u32(std::u32string(1, t[static_cast<size_t>(i)])));
  }
  if (key.is_string()) return get_attr(obj, key.as_string(), line);
  return Value::undefined(key.str());
}

// Dotted attribute path ("a.b", or "0" as an index) as the map/selectattr/sort filters take it.
Value get_attribute_path(const Value& obj, const std::string& path, int line) {
  Value cur = obj;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    // At most 18 digits: stoll of a longer one could throw std::out_of_range out of render(); longer ones
    // are looked up as names, which fails as jinja2's would.
    const bool numeric = !part.empty() && part.size() <= 18 &&
                         std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = numeric ? get_item(cur, Value::integer(std::stoll(part)), line) : get_item(cur, Value::string(part), line);
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

// ---- arithmetic ----

Value arith(const std::string& op, const Value& a, const Value& b, int line) {
  if (a.is_undefined()) fail_undefined(a, line);
  if (b.is_undefined()) fail_undefined(b, line);
  auto type_error = [&]() -> Value {
    fail("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'", line);
  };
  if (a.is_number() && b.is_number()) {
    const bool floats = a.is_float() || b.is_float();
    // Python's ints are unbounded; ours are 64-bit, so an overflow is an error, not a wrong number.
    auto checked = [&](bool overflowed, int64_t r) {
      if (overflowed) fail("unsupported construct: integer result beyond 64 bits", line);
      return Value::integer(r);
    };
    if (op == "+" || op == "-" || op == "*") {
      if (floats) {
        const double x = a.as_float(), y = b.as_float();
        return Value::floating(op == "+" ? x + y : op == "-" ? x - y : x * y);
      }
      int64_t r = 0;
      const bool overflowed = op == "+"   ? __builtin_add_overflow(a.as_int(), b.as_int(), &r)
                              : op == "-" ? __builtin_sub_overflow(a.as_int(), b.as_int(), &r)
                                          : __builtin_mul_overflow(a.as_int(), b.as_int(), &r);
      return checked(overflowed, r);
    }
    if (op == "/") {
      if (b.as_float() == 0) fail("division by zero", line);
      return Value::floating(a.as_float() / b.as_float());
    }
    if (op == "//" || op == "%") {
      if (b.as_float() == 0) fail("integer division or modulo by zero", line);
      if (floats) {
        const double q = std::floor(a.as_float() / b.as_float());
        return op == "//" ? Value::floating(q) : Value::floating(a.as_float() - q * b.as_float());
      }
      int64_t q = a.as_int() / b.as_int();
      int64_t r = a.as_int() % b.as_int();
      if (r != 0 && ((r < 0) != (b.as_int() < 0))) {
        --q;
        r += b.as_int();
      }
      return op == "//" ? Value::integer(q) : Value::integer(r);
    }
    if (op == "**") {
      if (!floats && b.as_int() >= 0) {
        int64_t p = 1;
        bool overflowed = false;
        for (int64_t i = 0; i < b.as_int() && !overflowed; ++i) overflowed = __builtin_mul_overflow(p, a.as_int(), &p);
        return checked(overflowed, p);
      }
      return Value::floating(std::pow(a.as_float(), b.as_float()));
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) return Value::string(a.as_string() + b.as_string());
  if (op == "+" && a.is_list() && b.is_list() && a.list_data().is_tuple == b.list_data().is_tuple) {
    std::vector<Value> items = a.list_data().items;
    items.insert(items.end(), b.list_data().items.begin(), b.list_data().items.end());
    return Value::list(items, a.list_data().is_tuple);
  }
  if (op == "*" && (a.is_int() || a.is_bool()) && (b.is_string() || b.is_list())) return arith(op, b, a, line);
  if (op == "*" && ((a.is_string() || a.is_list()) && (b.is_int() || b.is_bool()))) {
    const int64_t n = std::max<int64_t>(0, b.as_int());
    if (a.is_string()) {
      std::string out;
      for (int64_t i = 0; i < n; ++i) out += a.as_string();
      return Value::string(out);
    }
    std::vector<Value> items;
    for (int64_t i = 0; i < n; ++i) items.insert(items.end(), a.list_data().items.begin(), a.list_data().items.end());
    return Value::list(items, a.list_data().is_tuple);
  }
  if (op == "%" && a.is_string()) fail("unsupported construct: string formatting with '%'", line);
  return type_error();
}

}  // namespace tandem::tokenizer::jinja
