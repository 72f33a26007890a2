// Python's semantics for the values of a template, as Jinja2 inherits them: str methods and
// whitespace, len/iter/in, attribute and item lookup (environment.getattr/getitem), arithmetic
// with Python's rules, and argument binding for builtins. Used by the interpreter's expressions,
// filters and tests. Thread-safety: pure functions.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace tandem::tokenizer::jinja {

[[noreturn]] void fail(const std::string& message, int line);
[[noreturn]] void fail_undefined(const Value& v, int line);

// Strings as code points (Python indexes and slices those, not bytes).
std::u32string to_u32(const std::string& s);
std::string from_u32(const std::u32string& s);

// str methods: isspace(), strip([chars]) with left/right, upper()/lower() (full case mapping),
// title(), capitalize(), split([sep[, maxsplit]]), replace(old, new[, count]), splitlines();
// float(str) (nullopt where Python raises); HTML escaping of the escape filter.
bool py_isspace(char32_t c);
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::string map_case(const std::string& s, bool upper);
std::optional<double> py_float(const std::string& text);
std::string py_title(const std::string& s);
std::string py_capitalize(const std::string& s);
std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit, int line);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count);
std::vector<std::string> py_splitlines(const std::string& s);
std::string html_escape(const std::string& s);

// iter(v) (Undefined iterates empty), len(v), `item in container`.
std::vector<Value> iterate(const Value& v, int line);
int64_t py_len(const Value& v, int line);
bool contains(const Value& container, const Value& item, int line);

// Jinja2's environment.getattr (attribute first, then item) and getitem (item first); a dotted
// path ("a.b", "0") as the map/selectattr/sort filters take it.
Value get_attr(const Value& obj, const std::string& name, int line);
Value get_item(const Value& obj, const Value& key, int line);
Value get_attribute_path(const Value& obj, const std::string& path, int line);

// Python's ordering of a and b for < <= > >=: -1, 0 or 1; TemplateError for an undefined operand or
// values Python cannot order.
int ordered(const Value& a, const Value& b, int line);

// a <op> b for + - * / // % ** with Python's rules; TemplateError where Python raises TypeError.
Value arith(const std::string& op, const Value& a, const Value& b, int line);

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

}  // namespace tandem::tokenizer::jinja
