#include "tokenizer/jinja/interpreter.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {
namespace {

[[noreturn]] void fail(const std::string& message, int line) { throw TemplateError(message, line); }

[[noreturn]] void fail_undefined(const Value& v, int line) {
  fail("'" + v.undefined_name() + "' is undefined", line);
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

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  for (char32_t c : to_u32(s)) {
    const auto m = upper ? utf8proc_toupper(static_cast<utf8proc_int32_t>(c)) : utf8proc_tolower(static_cast<utf8proc_int32_t>(c));
    append_utf8(static_cast<char32_t>(m), &out);
  }
  return out;
}

bool is_cased_letter(char32_t c) {
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

// Python's slice.indices() followed by the selection, for any element type.
template <typename Seq>
Seq py_slice(const Seq& seq, const Value& start_v, const Value& stop_v, const Value& step_v, int line) {
  const int64_t len = static_cast<int64_t>(seq.size());
  int64_t step = 1;
  if (!step_v.is_none() && !step_v.is_undefined()) {
    if (!step_v.is_int()) fail("slice indices must be integers or None", line);
    step = step_v.as_int();
    if (step == 0) fail("slice step cannot be zero", line);
  }
  auto adjust = [&](const Value& v, int64_t dflt) {
    if (v.is_none() || v.is_undefined()) return dflt;
    if (!v.is_int() && !v.is_bool()) fail("slice indices must be integers or None", line);
    int64_t i = v.as_int();
    if (i < 0) {
      i += len;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= len) {
      i = step < 0 ? len - 1 : len;
    }
    return i;
  };
  const int64_t start = adjust(start_v, step < 0 ? len - 1 : 0);
  const int64_t stop = adjust(stop_v, step < 0 ? -1 : len);
  Seq out;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) out.push_back(seq[static_cast<size_t>(i)]);
  } else {
    for (int64_t i = start; i > stop; i += step) out.push_back(seq[static_cast<size_t>(i)]);
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

// Arguments of a builtin by position or keyword, Python style.
class Args {
 public:
  Args(CallArgs& call, const std::string& fn, std::vector<std::string> names)
      : call_(call), fn_(fn), names_(std::move(names)) {
    if (call.positional.size() > names_.size()) fail(fn + "() takes at most " + std::to_string(names_.size()) + " arguments", call.line);
    for (const auto& [k, _] : call.keyword)
      if (std::find(names_.begin(), names_.end(), k) == names_.end()) fail(fn + "() got an unexpected keyword argument '" + k + "'", call.line);
  }
  // nullptr when not given.
  const Value* get(size_t index) const {
    if (index < call_.positional.size()) return &call_.positional[index];
    for (const auto& [k, v] : call_.keyword)
      if (k == names_[index]) return &v;
    return nullptr;
  }
  Value get_or(size_t index, Value dflt) const {
    const Value* v = get(index);
    return v ? *v : dflt;
  }
  const Value& required(size_t index) const {
    const Value* v = get(index);
    if (!v) fail(fn_ + "() missing required argument '" + names_[index] + "'", call_.line);
    return *v;
  }
  const std::string& string(size_t index) const {
    const Value& v = required(index);
    if (!v.is_string()) fail(fn_ + "() argument '" + names_[index] + "' must be str, not " + v.type_name(), call_.line);
    return v.as_string();
  }
  int line() const { return call_.line; }

 private:
  CallArgs& call_;
  std::string fn_;
  std::vector<std::string> names_;
};

Value make_method(const Value& self, const std::string& name, std::function<Value(const Value&, CallArgs&)> fn) {
  return Value::function(name, [self, fn](CallArgs& args) { return fn(self, args); });
}

bool prefix_match(const std::string& s, const Value& arg, bool suffix, int line) {
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

Value string_method(const Value& self, const std::string& name) {
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

Value dict_method(const Value& self, const std::string& name) {
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

Value list_method(const Value& self, const std::string& name) {
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
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
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
    if (op == "+") return floats ? Value::floating(a.as_float() + b.as_float()) : Value::integer(a.as_int() + b.as_int());
    if (op == "-") return floats ? Value::floating(a.as_float() - b.as_float()) : Value::integer(a.as_int() - b.as_int());
    if (op == "*") return floats ? Value::floating(a.as_float() * b.as_float()) : Value::integer(a.as_int() * b.as_int());
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
        int64_t r = 1;
        for (int64_t i = 0; i < b.as_int(); ++i) r *= a.as_int();
        return Value::integer(r);
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

// ---- the interpreter ----

using Frame = std::unordered_map<std::string, Value>;

class Interpreter {
 public:
  explicit Interpreter(Frame globals) { frames_.push_back(std::move(globals)); }

  std::string run(const Body& body) {
    std::string out;
    exec(body, &out);
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Value lookup(const std::string& name) const {
    for (size_t i = frames_.size(); i-- > barrier_;) {
      auto it = frames_[i].find(name);
      if (it != frames_[i].end()) return it->second;
    }
    if (barrier_ > 0) {
      auto it = frames_[0].find(name);
      if (it != frames_[0].end()) return it->second;
    }
    return Value::undefined(name);
  }

  void assign(const std::string& name, Value v) { frames_.back()[name] = std::move(v); }

  Flow exec(const Body& body, std::string* out) {
    for (const auto& node : body) {
      const Flow flow = exec_node(*node, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  Flow exec_node(const Node& node, std::string* out) {
    switch (node.kind) {
      case Node::Kind::kText: *out += node.text; return Flow::kNormal;
      case Node::Kind::kOutput: *out += eval(*node.expr).str(); return Flow::kNormal;
      case Node::Kind::kIf:
        for (size_t i = 0; i < node.bodies.size(); ++i) {
          if (i >= node.conditions.size() || eval(*node.conditions[i]).truthy()) return exec(node.bodies[i], out);
        }
        return Flow::kNormal;
      case Node::Kind::kFor: return exec_for(node, out);
      case Node::Kind::kSet: {
        Value v = eval(*node.expr);
        if (!node.name.empty()) {
          Value ns = lookup(node.targets[0]);
          if (!ns.is_dict() || !ns.dict_data().is_namespace) {
            fail("cannot assign attribute on non-namespace object '" + node.targets[0] + "'", node.line);
          }
          ns.dict_data().set(node.name, std::move(v));
        } else if (node.targets.size() == 1) {
          assign(node.targets[0], std::move(v));
        } else {
          unpack_into(node.targets, v, node.line);
        }
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock: {
        std::string captured;
        exec(node.bodies[0], &captured);
        assign(node.targets[0], Value::string(captured));
        return Flow::kNormal;
      }
      case Node::Kind::kMacro: assign(node.name, make_macro(node)); return Flow::kNormal;
      case Node::Kind::kBreak: return Flow::kBreak;
      case Node::Kind::kContinue: return Flow::kContinue;
      case Node::Kind::kScope: return exec(node.bodies[0], out);
    }
    return Flow::kNormal;
  }

  void unpack_into(const std::vector<std::string>& targets, const Value& v, int line) {
    const auto items = iterate(v, line);
    if (items.size() != targets.size()) {
      fail("cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(targets.size()) + " names", line);
    }
    for (size_t i = 0; i < targets.size(); ++i) assign(targets[i], items[i]);
  }

  Flow exec_for(const Node& node, std::string* out) {
    std::vector<Value> items = iterate(eval(*node.expr), node.line);
    if (node.filter) {
      // Jinja filters before looping, so loop.length and loop.last count only kept items.
      std::vector<Value> kept;
      for (const auto& item : items) {
        frames_.emplace_back();
        bind_targets(node, item);
        if (eval(*node.filter).truthy()) kept.push_back(item);
        frames_.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      if (node.bodies.size() > 1) return exec(node.bodies[1], out);
      return Flow::kNormal;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      frames_.emplace_back();
      Value loop = Value::dict();
      auto& l = loop.dict_data();
      l.set("index0", Value::integer(i));
      l.set("index", Value::integer(i + 1));
      l.set("revindex0", Value::integer(n - i - 1));
      l.set("revindex", Value::integer(n - i));
      l.set("first", Value::boolean(i == 0));
      l.set("last", Value::boolean(i == n - 1));
      l.set("length", Value::integer(n));
      l.set("depth", Value::integer(1));
      l.set("depth0", Value::integer(0));
      l.set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)] : Value::undefined("previtem"));
      l.set("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)] : Value::undefined("nextitem"));
      l.set("cycle", Value::function("cycle", [i](CallArgs& c) {
              if (c.positional.empty()) fail("no items for cycling given", c.line);
              return c.positional[static_cast<size_t>(i) % c.positional.size()];
            }));
      l.is_namespace = true;  // plain attribute access; no dict methods
      assign("loop", loop);
      bind_targets(node, items[static_cast<size_t>(i)]);
      const Flow flow = exec(node.bodies[0], out);
      frames_.pop_back();
      if (flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  void bind_targets(const Node& node, const Value& item) {
    if (node.targets.size() == 1) {
      assign(node.targets[0], item);
    } else {
      unpack_into(node.targets, item, node.line);
    }
  }

  Value make_macro(const Node& node) {
    const Node* macro = &node;
    return Value::function(node.name, [this, macro](CallArgs& c) {
      if (c.positional.size() > macro->targets.size()) fail("macro '" + macro->name + "' takes " + std::to_string(macro->targets.size()) + " arguments", c.line);
      Frame frame;
      for (size_t i = 0; i < macro->targets.size(); ++i) {
        const std::string& param = macro->targets[i];
        const Value* given = i < c.positional.size() ? &c.positional[i] : nullptr;
        for (const auto& [k, v] : c.keyword)
          if (k == param) given = &v;
        if (given) {
          frame[param] = *given;
        } else if (macro->defaults[i]) {
          frame[param] = Value();  // placeholder; defaults evaluate in the macro's scope below
        } else {
          frame[param] = Value::undefined(param);
        }
      }
      for (const auto& [k, _] : c.keyword) {
        if (std::find(macro->targets.begin(), macro->targets.end(), k) == macro->targets.end()) {
          fail("macro '" + macro->name + "' got an unexpected keyword argument '" + k + "'", c.line);
        }
      }
      const size_t saved_barrier = barrier_;
      frames_.push_back(std::move(frame));
      barrier_ = frames_.size() - 1;
      for (size_t i = 0; i < macro->targets.size(); ++i) {
        const std::string& param = macro->targets[i];
        bool given = i < c.positional.size();
        for (const auto& [k, _] : c.keyword) given = given || k == param;
        if (!given && macro->defaults[i]) frames_.back()[param] = eval(*macro->defaults[i]);
      }
      std::string out;
      exec(macro->bodies[0], &out);
      frames_.pop_back();
      barrier_ = saved_barrier;
      return Value::string(out);
    });
  }

  CallArgs eval_args(const Expr& e, size_t first) {
    CallArgs args;
    args.line = e.line;
    for (size_t i = first; i < e.children.size(); ++i) {
      const std::string& name = e.arg_names[i - first];
      Value v = eval(*e.children[i]);
      if (name.empty()) {
        args.positional.push_back(std::move(v));
      } else {
        args.keyword.emplace_back(name, std::move(v));
      }
    }
    return args;
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral: return e.literal;
      case Expr::Kind::kName: return lookup(e.name);
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        std::vector<Value> items;
        for (const auto& c : e.children) items.push_back(eval(*c));
        return Value::list(std::move(items), e.kind == Expr::Kind::kTuple);
      }
      case Expr::Kind::kDict: {
        Value d = Value::dict();
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value k = eval(*e.children[i]);
          if (!k.is_string()) fail("unsupported construct: dict literal with a non-string key", e.line);
          d.dict_data().set(k.as_string(), eval(*e.children[i + 1]));
        }
        return d;
      }
      case Expr::Kind::kGetAttr: return get_attr(eval(*e.children[0]), e.name, e.line);
      case Expr::Kind::kGetItem: return get_item(eval(*e.children[0]), eval(*e.children[1]), e.line);
      case Expr::Kind::kSlice: {
        const Value obj = eval(*e.children[0]);
        Value parts[3];
        for (int i = 0; i < 3; ++i) parts[i] = e.children[static_cast<size_t>(i) + 1] ? eval(*e.children[static_cast<size_t>(i) + 1]) : Value::none();
        if (obj.is_undefined()) fail_undefined(obj, e.line);
        if (obj.is_list()) return Value::list(py_slice(obj.list_data().items, parts[0], parts[1], parts[2], e.line), obj.list_data().is_tuple);
        if (obj.is_string()) return Value::string(from_u32(py_slice(to_u32(obj.as_string()), parts[0], parts[1], parts[2], e.line)));
        fail("'" + obj.type_name() + "' object is not subscriptable", e.line);
      }
      case Expr::Kind::kCall: {
        const Value callee = eval(*e.children[0]);
        CallArgs args = eval_args(e, 1);
        if (callee.is_undefined()) fail_undefined(callee, e.line);
        if (!callee.is_function()) fail("'" + callee.type_name() + "' object is not callable", e.line);
        return callee.function_data().call(args);
      }
      case Expr::Kind::kFilter: {
        Value operand = eval(*e.children[0]);
        CallArgs args = eval_args(e, 1);
        return apply_filter(e.name, operand, args);
      }
      case Expr::Kind::kTest: {
        Value operand = eval(*e.children[0]);
        CallArgs args = eval_args(e, 1);
        const bool result = apply_test(e.name, operand, args);
        return Value::boolean(e.negated ? !result : result);
      }
      case Expr::Kind::kUnary: {
        const Value v = eval(*e.children[0]);
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.is_undefined()) fail_undefined(v, e.line);
        if (!v.is_number()) fail("bad operand type for unary " + e.name + ": '" + v.type_name() + "'", e.line);
        if (e.name == "+") return v.is_float() ? v : Value::integer(v.as_int());
        return v.is_float() ? Value::floating(-v.as_float()) : Value::integer(-v.as_int());
      }
      case Expr::Kind::kBinary: {
        if (e.name == "and") {
          Value a = eval(*e.children[0]);
          return a.truthy() ? eval(*e.children[1]) : a;
        }
        if (e.name == "or") {
          Value a = eval(*e.children[0]);
          return a.truthy() ? a : eval(*e.children[1]);
        }
        const Value a = eval(*e.children[0]);
        const Value b = eval(*e.children[1]);
        if (e.name == "~") return Value::string(a.str() + b.str());
        return arith(e.name, a, b, e.line);
      }
      case Expr::Kind::kCompare: {
        Value left = eval(*e.children[0]);
        for (size_t i = 0; i < e.arg_names.size(); ++i) {
          Value right = eval(*e.children[i + 1]);
          const std::string& op = e.arg_names[i];
          bool ok;
          if (op == "==") ok = left.equals(right);
          else if (op == "!=") ok = !left.equals(right);
          else if (op == "<") ok = ordered(left, right, e.line) < 0;
          else if (op == ">") ok = ordered(left, right, e.line) > 0;
          else if (op == "<=") ok = ordered(left, right, e.line) <= 0;
          else if (op == ">=") ok = ordered(left, right, e.line) >= 0;
          else if (op == "in") ok = contains(right, left, e.line);
          else ok = !contains(right, left, e.line);
          if (!ok) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::Kind::kCondition: {
        if (eval(*e.children[1]).truthy()) return eval(*e.children[0]);
        if (e.children[2]) return eval(*e.children[2]);
        return Value::undefined("conditional expression");
      }
    }
    return Value();
  }

  static int ordered(const Value& a, const Value& b, int line) {
    if (a.is_undefined()) fail_undefined(a, line);
    if (b.is_undefined()) fail_undefined(b, line);
    if (a.less_than(b, line)) return -1;
    if (b.less_than(a, line)) return 1;
    return 0;
  }

  // ---- filters (jinja2/filters.py semantics; tojson is Hugging Face's) ----

  Value apply_filter(const std::string& name, const Value& v, CallArgs& c) {
    const int line = c.line;
    if (name == "tojson") {
      Args a(c, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
      if (a.get(0) && a.get(0)->truthy()) fail("unsupported construct: tojson(ensure_ascii=true)", line);
      int indent = -1;
      if (const Value* i = a.get(1); i && !i->is_none()) {
        if (!i->is_int()) fail("unsupported construct: tojson indent that is not an integer", line);
        indent = static_cast<int>(i->as_int());
      }
      std::string item_sep = indent >= 0 ? "," : ", ", key_sep = ": ";
      if (const Value* s = a.get(2); s && !s->is_none()) {
        const auto parts = iterate(*s, line);
        if (parts.size() != 2 || !parts[0].is_string() || !parts[1].is_string()) fail("tojson separators must be a pair of strings", line);
        item_sep = parts[0].as_string();
        key_sep = parts[1].as_string();
      }
      try {
        return Value::string(v.to_json(indent, item_sep, key_sep, a.get_or(3, Value::boolean(false)).truthy()));
      } catch (const TemplateError& err) {
        fail(err.what(), line);
      }
    }
    if (name == "length" || name == "count") {
      Args a(c, name, {});
      return Value::integer(py_len(v, line));
    }
    if (name == "default" || name == "d") {
      Args a(c, name, {"default_value", "boolean"});
      const bool boolean = a.get_or(1, Value::boolean(false)).truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return a.get_or(0, Value::string(""));
      return v;
    }
    if (name == "trim") {
      Args a(c, "trim", {"chars"});
      return Value::string(py_strip(v.str(), a.get(0), true, true));
    }
    if (name == "upper" || name == "lower") {
      Args a(c, name, {});
      return Value::string(map_case(v.str(), name == "upper"));
    }
    if (name == "title") {
      Args a(c, name, {});
      return Value::string(py_title(v.str()));
    }
    if (name == "capitalize") {
      Args a(c, name, {});
      return Value::string(py_capitalize(v.str()));
    }
    if (name == "string") {
      Args a(c, name, {});
      return Value::string(v.str());
    }
    if (name == "safe") {
      Args a(c, name, {});
      return v;
    }
    if (name == "e" || name == "escape") {
      Args a(c, name, {});
      return Value::string(html_escape(v.str()));
    }
    if (name == "replace") {
      Args a(c, "replace", {"old", "new", "count"});
      const Value* count = a.get(2);
      return Value::string(py_replace(v.str(), a.string(0), a.string(1), count && !count->is_none() ? count->as_int() : -1));
    }
    if (name == "first" || name == "last") {
      Args a(c, name, {});
      const auto items = iterate(v, line);
      if (items.empty()) return Value::undefined(name);
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") {
      Args a(c, name, {});
      return Value::list(iterate(v, line));
    }
    if (name == "join") {
      Args a(c, "join", {"d", "attribute"});
      const std::string sep = a.get_or(0, Value::string("")).str();
      const Value* attr = a.get(1);
      std::string out;
      bool first = true;
      for (const auto& item : iterate(v, line)) {
        if (!first) out += sep;
        first = false;
        out += (attr && !attr->is_none() ? get_attribute_path(item, attr->str(), line) : item).str();
      }
      return Value::string(out);
    }
    if (name == "reverse") {
      Args a(c, name, {});
      if (v.is_string()) {
        std::u32string t = to_u32(v.as_string());
        std::reverse(t.begin(), t.end());
        return Value::string(from_u32(t));
      }
      auto items = iterate(v, line);
      std::reverse(items.begin(), items.end());
      return Value::list(items);
    }
    if (name == "items") {
      Args a(c, name, {});
      if (v.is_undefined()) return Value::list();
      if (!v.is_dict()) fail("can only get item pairs from a mapping", line);
      std::vector<Value> out;
      for (const auto& [k, val] : v.dict_data().items) out.push_back(Value::list({Value::string(k), val}, true));
      return Value::list(out);
    }
    if (name == "dictsort") {
      Args a(c, "dictsort", {"case_sensitive", "by", "reverse"});
      if (!v.is_dict()) fail("dictsort expects a mapping", line);
      const bool case_sensitive = a.get_or(0, Value::boolean(false)).truthy();
      const bool by_value = a.get_or(1, Value::string("key")).str() == "value";
      const bool reverse = a.get_or(2, Value::boolean(false)).truthy();
      std::vector<Value> out;
      for (const auto& [k, val] : v.dict_data().items) out.push_back(Value::list({Value::string(k), val}, true));
      sort_values(&out, case_sensitive, reverse, [by_value](const Value& p) { return p.list_data().items[by_value ? 1 : 0]; }, line);
      return Value::list(out);
    }
    if (name == "sort") {
      Args a(c, "sort", {"reverse", "case_sensitive", "attribute"});
      auto items = iterate(v, line);
      const Value* attr = a.get(2);
      sort_values(&items, a.get_or(1, Value::boolean(false)).truthy(), a.get_or(0, Value::boolean(false)).truthy(),
                  [&](const Value& x) { return attr && !attr->is_none() ? get_attribute_path(x, attr->str(), line) : x; }, line);
      return Value::list(items);
    }
    if (name == "unique") {
      Args a(c, "unique", {"case_sensitive", "attribute"});
      const bool cs = a.get_or(0, Value::boolean(false)).truthy();
      const Value* attr = a.get(1);
      std::vector<Value> out, seen;
      for (const auto& item : iterate(v, line)) {
        Value key = attr && !attr->is_none() ? get_attribute_path(item, attr->str(), line) : item;
        if (!cs && key.is_string()) key = Value::string(map_case(key.as_string(), false));
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.equals(key); })) {
          seen.push_back(key);
          out.push_back(item);
        }
      }
      return Value::list(out);
    }
    if (name == "min" || name == "max") {
      Args a(c, name, {"case_sensitive", "attribute"});
      auto items = iterate(v, line);
      if (items.empty()) return Value::undefined(name);
      const Value* attr = a.get(1);
      sort_values(&items, a.get_or(0, Value::boolean(false)).truthy(), false,
                  [&](const Value& x) { return attr && !attr->is_none() ? get_attribute_path(x, attr->str(), line) : x; }, line);
      return name == "min" ? items.front() : items.back();
    }
    if (name == "sum") {
      Args a(c, "sum", {"attribute", "start"});
      Value total = a.get_or(1, Value::integer(0));
      const Value* attr = a.get(0);
      for (const auto& item : iterate(v, line)) {
        total = arith("+", total, attr && !attr->is_none() ? get_attribute_path(item, attr->str(), line) : item, line);
      }
      return total;
    }
    if (name == "abs") {
      Args a(c, name, {});
      if (!v.is_number()) fail("bad operand type for abs(): '" + v.type_name() + "'", line);
      return v.is_float() ? Value::floating(std::fabs(v.as_float())) : Value::integer(std::llabs(v.as_int()));
    }
    if (name == "round") {
      Args a(c, "round", {"precision", "method"});
      const int64_t precision = a.get_or(0, Value::integer(0)).as_int();
      const std::string method = a.get_or(1, Value::string("common")).str();
      const double scale = std::pow(10.0, static_cast<double>(precision));
      const double x = v.as_float() * scale;
      double r;
      if (method == "common") r = std::nearbyint(x);  // Python's round(): half to even
      else if (method == "ceil") r = std::ceil(x);
      else if (method == "floor") r = std::floor(x);
      else fail("method must be common, ceil or floor", line);
      return Value::floating(r / scale);
    }
    if (name == "int") {
      Args a(c, "int", {"default", "base"});
      const Value dflt = a.get_or(0, Value::integer(0));
      if (v.is_number()) return Value::integer(v.as_int());
      if (v.is_string()) {
        const std::string s = py_strip(v.as_string(), nullptr, true, true);
        try {
          size_t used = 0;
          const int64_t i = std::stoll(s, &used, static_cast<int>(a.get_or(1, Value::integer(10)).as_int()));
          if (used == s.size()) return Value::integer(i);
        } catch (const std::exception&) {
        }
        try {
          size_t used = 0;
          const double d = std::stod(s, &used);
          if (used == s.size()) return Value::integer(static_cast<int64_t>(d));
        } catch (const std::exception&) {
        }
      }
      return dflt;
    }
    if (name == "float") {
      Args a(c, "float", {"default"});
      if (v.is_number()) return Value::floating(v.as_float());
      if (v.is_string()) {
        const std::string s = py_strip(v.as_string(), nullptr, true, true);
        try {
          size_t used = 0;
          const double d = std::stod(s, &used);
          if (used == s.size()) return Value::floating(d);
        } catch (const std::exception&) {
        }
      }
      return a.get_or(0, Value::floating(0.0));
    }
    if (name == "wordcount") {
      Args a(c, name, {});
      int64_t n = 0;
      bool in_word = false;
      for (char32_t ch : to_u32(v.str())) {
        const bool word = ch == '_' || is_alphanumeric(ch);
        if (word && !in_word) ++n;
        in_word = word;
      }
      return Value::integer(n);
    }
    if (name == "indent") {
      Args a(c, "indent", {"width", "first", "blank"});
      const Value width = a.get_or(0, Value::integer(4));
      const std::string pad = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
      const bool first = a.get_or(1, Value::boolean(false)).truthy();
      const bool blank = a.get_or(2, Value::boolean(false)).truthy();
      const std::vector<std::string> lines = py_splitlines(v.str() + "\n");
      std::string rv;
      if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) rv += (i ? "\n" + pad : "") + lines[i];
      } else {
        rv = lines.empty() ? "" : lines[0];
        for (size_t i = 1; i < lines.size(); ++i) rv += "\n" + (lines[i].empty() ? lines[i] : pad + lines[i]);
      }
      if (first) rv = pad + rv;
      return Value::string(rv);
    }
    if (name == "map") {
      std::vector<Value> out;
      const auto items = iterate(v, line);
      std::string attribute;
      Value dflt;
      bool has_attribute = false;
      for (const auto& [k, val] : c.keyword) {
        if (k == "attribute") {
          attribute = val.str();
          has_attribute = true;
        } else if (k == "default") {
          dflt = val;
        } else {
          fail("map() got an unexpected keyword argument '" + k + "'", line);
        }
      }
      if (has_attribute) {
        for (const auto& item : items) {
          Value x = get_attribute_path(item, attribute, line);
          out.push_back(x.is_undefined() && !dflt.is_undefined() ? dflt : x);
        }
        return Value::list(out);
      }
      if (c.positional.empty() || !c.positional[0].is_string()) fail("map() needs a filter name or attribute=", line);
      const std::string filter = c.positional[0].as_string();
      CallArgs rest;
      rest.line = line;
      rest.positional.assign(c.positional.begin() + 1, c.positional.end());
      for (const auto& item : items) {
        CallArgs copy = rest;
        out.push_back(apply_filter(filter, item, copy));
      }
      return Value::list(out);
    }
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      const bool by_attr = name == "selectattr" || name == "rejectattr";
      const bool keep_if = name == "select" || name == "selectattr";
      size_t next = 0;
      std::string attr;
      if (by_attr) {
        if (c.positional.empty()) fail(name + "() needs an attribute name", line);
        attr = c.positional[next++].str();
      }
      std::string test;
      if (next < c.positional.size()) test = c.positional[next++].str();
      CallArgs rest;
      rest.line = line;
      rest.positional.assign(c.positional.begin() + static_cast<std::ptrdiff_t>(next), c.positional.end());
      std::vector<Value> out;
      for (const auto& item : iterate(v, line)) {
        const Value x = by_attr ? get_attribute_path(item, attr, line) : item;
        bool passed;
        if (test.empty()) {
          passed = x.truthy();
        } else {
          CallArgs copy = rest;
          passed = apply_test(test, x, copy);
        }
        if (passed == keep_if) out.push_back(item);
      }
      return Value::list(out);
    }
    fail("unsupported construct: filter '" + name + "'", line);
  }

  template <typename KeyFn>
  static void sort_values(std::vector<Value>* items, bool case_sensitive, bool reverse, KeyFn key, int line) {
    auto norm = [&](const Value& x) {
      Value k = key(x);
      if (!case_sensitive && k.is_string()) return Value::string(map_case(k.as_string(), false));
      return k;
    };
    std::stable_sort(items->begin(), items->end(), [&](const Value& a, const Value& b) {
      return reverse ? norm(b).less_than(norm(a), line) : norm(a).less_than(norm(b), line);
    });
  }

  // ---- tests (jinja2/tests.py) ----

  bool apply_test(const std::string& name, const Value& v, CallArgs& c) {
    const int line = c.line;
    auto arg = [&]() -> const Value& {
      if (c.positional.empty()) fail("test '" + name + "' needs an argument", line);
      return c.positional[0];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_float();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_dict() && !v.dict_data().is_namespace;
    if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
    if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
    if (name == "callable") return v.is_function();
    if (name == "escaped") return false;
    if (name == "odd" || name == "even") {
      if (!v.is_int() && !v.is_bool()) fail("test '" + name + "' needs an integer", line);
      const bool odd = (v.as_int() % 2) != 0;
      return name == "odd" ? odd : !odd;
    }
    if (name == "divisibleby") {
      const Value& n = arg();
      if (n.as_int() == 0) fail("integer division or modulo by zero", line);
      return v.as_int() % n.as_int() == 0;
    }
    if (name == "lower") return v.is_string() && map_case(v.as_string(), false) == v.as_string() && map_case(v.as_string(), true) != v.as_string();
    if (name == "upper") return v.is_string() && map_case(v.as_string(), true) == v.as_string() && map_case(v.as_string(), false) != v.as_string();
    if (name == "eq" || name == "equalto" || name == "==") return v.equals(arg());
    if (name == "ne" || name == "!=") return !v.equals(arg());
    if (name == "lt" || name == "<" || name == "lessthan") return ordered(v, arg(), line) < 0;
    if (name == "le" || name == "<=") return ordered(v, arg(), line) <= 0;
    if (name == "gt" || name == ">" || name == "greaterthan") return ordered(v, arg(), line) > 0;
    if (name == "ge" || name == ">=") return ordered(v, arg(), line) >= 0;
    if (name == "in") return contains(arg(), v, line);
    if (name == "sameas") return v.same_as(arg());
    fail("unsupported construct: test '" + name + "'", line);
  }

  std::vector<Frame> frames_;
  size_t barrier_ = 0;  // inside a macro: frames below this index (but 0) are not visible
};

}  // namespace

std::string render(const Body& body, std::unordered_map<std::string, Value> globals) {
  return Interpreter(std::move(globals)).run(body);
}

}  // namespace tandem::tokenizer::jinja
