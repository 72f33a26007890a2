// Jinja2's filters (jinja2/filters.py semantics; tojson is Hugging Face's) and tests (jinja2/tests.py).
// kFilters and kTests below are the one list of the filters and tests a template may use: the parser
// rejects any other name, the interpreter calls the function the table gives.
#include "tokenizer/jinja/filters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string_view>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {
namespace {

template <typename KeyFn>
void sort_values(std::vector<Value>* items, bool case_sensitive, bool reverse, KeyFn key, int line) {
  auto norm = [&](const Value& x) {
    Value k = key(x);
    if (!case_sensitive && k.is_string()) return Value::string(map_case(k.as_string(), false));
    return k;
  };
  std::stable_sort(items->begin(), items->end(), [&](const Value& a, const Value& b) {
    return reverse ? norm(b).less_than(norm(a), line) : norm(a).less_than(norm(b), line);
  });
}

// One function per filter; one that serves several names (upper and lower, first and last, ...) gets
// the name it was called by.

Value filter_tojson(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  const bool ensure_ascii = a.get(0) && a.get(0)->truthy();
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
    return Value::string(v.to_json(indent, item_sep, key_sep, a.get_or(3, Value::boolean(false)).truthy(), ensure_ascii));
  } catch (const TemplateError& err) {
    fail(err.what(), line);
  }
}

Value filter_length_count(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {});
  return Value::integer(py_len(v, line));
}

Value filter_default(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {"default_value", "boolean"});
  const bool boolean = a.get_or(1, Value::boolean(false)).truthy();
  if (v.is_undefined() || (boolean && !v.truthy())) return a.get_or(0, Value::string(""));
  return v;
}

Value filter_trim(const std::string& /*name*/, const Value& v, CallArgs& c) {
  Args a(c, "trim", {"chars"});
  return Value::string(py_strip(v.str(), a.get(0), true, true));
}

Value filter_case(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return Value::string(map_case(v.str(), name == "upper"));
}

Value filter_title(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return Value::string(py_title(v.str()));
}

Value filter_capitalize(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return Value::string(py_capitalize(v.str()));
}

Value filter_string(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return Value::string(v.str());
}

Value filter_safe(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return v;
}

Value filter_escape(const std::string& name, const Value& v, CallArgs& c) {
  Args a(c, name, {});
  return Value::string(html_escape(v.str()));
}

Value filter_replace(const std::string& /*name*/, const Value& v, CallArgs& c) {
  Args a(c, "replace", {"old", "new", "count"});
  const Value* count = a.get(2);
  return Value::string(py_replace(v.str(), a.string(0), a.string(1), count && !count->is_none() ? count->as_int() : -1));
}

Value filter_first_last(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {});
  const auto items = iterate(v, line);
  if (items.empty()) return Value::undefined(name);
  return name == "first" ? items.front() : items.back();
}

Value filter_list(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {});
  return Value::list(iterate(v, line));
}

Value filter_join(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
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

Value filter_reverse(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
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

Value filter_items(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {});
  if (v.is_undefined()) return Value::list();
  if (!v.is_dict()) fail("can only get item pairs from a mapping", line);
  std::vector<Value> out;
  for (const auto& [k, val] : v.dict_data().items) out.push_back(Value::list({Value::string(k), val}, true));
  return Value::list(out);
}

Value filter_dictsort(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
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

Value filter_sort(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, "sort", {"reverse", "case_sensitive", "attribute"});
  auto items = iterate(v, line);
  const Value* attr = a.get(2);
  sort_values(&items, a.get_or(1, Value::boolean(false)).truthy(), a.get_or(0, Value::boolean(false)).truthy(),
              [&](const Value& x) { return attr && !attr->is_none() ? get_attribute_path(x, attr->str(), line) : x; }, line);
  return Value::list(items);
}

Value filter_unique(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
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

Value filter_min_max(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {"case_sensitive", "attribute"});
  auto items = iterate(v, line);
  if (items.empty()) return Value::undefined(name);
  const Value* attr = a.get(1);
  sort_values(&items, a.get_or(0, Value::boolean(false)).truthy(), false,
              [&](const Value& x) { return attr && !attr->is_none() ? get_attribute_path(x, attr->str(), line) : x; }, line);
  return name == "min" ? items.front() : items.back();
}

Value filter_sum(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, "sum", {"attribute", "start"});
  Value total = a.get_or(1, Value::integer(0));
  const Value* attr = a.get(0);
  for (const auto& item : iterate(v, line)) {
    total = arith("+", total, attr && !attr->is_none() ? get_attribute_path(item, attr->str(), line) : item, line);
  }
  return total;
}

Value filter_abs(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, name, {});
  if (!v.is_number()) fail("bad operand type for abs(): '" + v.type_name() + "'", line);
  return v.is_float() ? Value::floating(std::fabs(v.as_float())) : Value::integer(std::llabs(v.as_int()));
}

Value filter_round(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
  Args a(c, "round", {"precision", "method"});
  const int64_t precision = a.get_or(0, Value::integer(0)).as_int();
  const std::string method = a.get_or(1, Value::string("common")).str();
  if (method == "common" && precision >= 0 && std::isfinite(v.as_float())) {
    // Python's round() rounds the exact binary value correctly (2.675 -> 2.67); printf does too.
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(std::min<int64_t>(precision, 300)), v.as_float());
    return Value::floating(std::strtod(buf, nullptr));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  double r;
  if (method == "common") r = std::nearbyint(x);
  else if (method == "ceil") r = std::ceil(x);
  else if (method == "floor") r = std::floor(x);
  else fail("method must be common, ceil or floor", line);
  return Value::floating(r / scale);
}

Value filter_int(const std::string& /*name*/, const Value& v, CallArgs& c) {
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
    if (const auto d = py_float(s); d && std::isfinite(*d)) return Value::integer(static_cast<int64_t>(*d));
  }
  return dflt;
}

Value filter_float(const std::string& /*name*/, const Value& v, CallArgs& c) {
  Args a(c, "float", {"default"});
  if (v.is_number()) return Value::floating(v.as_float());
  if (v.is_string()) {
    if (const auto d = py_float(v.as_string())) return Value::floating(*d);
  }
  return a.get_or(0, Value::floating(0.0));
}

Value filter_wordcount(const std::string& name, const Value& v, CallArgs& c) {
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

Value filter_indent(const std::string& /*name*/, const Value& v, CallArgs& c) {
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

Value filter_map(const std::string& /*name*/, const Value& v, CallArgs& c) {
  const int line = c.line;
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

Value filter_select(const std::string& name, const Value& v, CallArgs& c) {
  const int line = c.line;
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

using FilterFn = Value (*)(const std::string& name, const Value& v, CallArgs& args);

const std::map<std::string_view, FilterFn> kFilters = {
    {"abs", filter_abs},
    {"capitalize", filter_capitalize},
    {"count", filter_length_count},
    {"d", filter_default},
    {"default", filter_default},
    {"dictsort", filter_dictsort},
    {"e", filter_escape},
    {"escape", filter_escape},
    {"first", filter_first_last},
    {"float", filter_float},
    {"indent", filter_indent},
    {"int", filter_int},
    {"items", filter_items},
    {"join", filter_join},
    {"last", filter_first_last},
    {"length", filter_length_count},
    {"list", filter_list},
    {"lower", filter_case},
    {"map", filter_map},
    {"max", filter_min_max},
    {"min", filter_min_max},
    {"reject", filter_select},
    {"rejectattr", filter_select},
    {"replace", filter_replace},
    {"reverse", filter_reverse},
    {"round", filter_round},
    {"safe", filter_safe},
    {"select", filter_select},
    {"selectattr", filter_select},
    {"sort", filter_sort},
    {"string", filter_string},
    {"sum", filter_sum},
    {"title", filter_title},
    {"tojson", filter_tojson},
    {"trim", filter_trim},
    {"unique", filter_unique},
    {"upper", filter_case},
    {"wordcount", filter_wordcount},
};

// ---- tests (jinja2/tests.py) ----

// The argument of a test that takes one (`x is divisibleby 3`, `x is eq y`).
const Value& test_arg(const std::string& name, CallArgs& c) {
  if (c.positional.empty()) fail("test '" + name + "' needs an argument", c.line);
  return c.positional[0];
}

bool is_lower_case(const Value& v) {
  return v.is_string() && map_case(v.as_string(), false) == v.as_string() &&
         map_case(v.as_string(), true) != v.as_string();
}

bool is_upper_case(const Value& v) {
  return v.is_string() && map_case(v.as_string(), true) == v.as_string() &&
         map_case(v.as_string(), false) != v.as_string();
}

bool test_odd_even(const std::string& name, const Value& v, CallArgs& c) {
  if (!v.is_int() && !v.is_bool()) fail("test '" + name + "' needs an integer", c.line);
  const bool odd = (v.as_int() % 2) != 0;
  return name == "odd" ? odd : !odd;
}

bool test_divisibleby(const std::string& name, const Value& v, CallArgs& c) {
  const Value& n = test_arg(name, c);
  if (n.as_int() == 0) fail("integer division or modulo by zero", c.line);
  return v.as_int() % n.as_int() == 0;
}

using TestFn = bool (*)(const std::string& name, const Value& v, CallArgs& args);

// Tests without an argument ignore name and args; the comparison tests take their operand by position.
const std::map<std::string_view, TestFn> kTests = {
    {"boolean", [](const std::string&, const Value& v, CallArgs&) { return v.is_bool(); }},
    {"callable", [](const std::string&, const Value& v, CallArgs&) { return v.is_function(); }},
    {"defined", [](const std::string&, const Value& v, CallArgs&) { return !v.is_undefined(); }},
    {"divisibleby", test_divisibleby},
    {"escaped", [](const std::string&, const Value&, CallArgs&) { return false; }},
    {"even", test_odd_even},
    {"false", [](const std::string&, const Value& v, CallArgs&) { return v.is_bool() && !v.as_bool(); }},
    {"float", [](const std::string&, const Value& v, CallArgs&) { return v.is_float(); }},
    {"in", [](const std::string& n, const Value& v, CallArgs& c) { return contains(test_arg(n, c), v, c.line); }},
    {"integer", [](const std::string&, const Value& v, CallArgs&) { return v.is_int(); }},
    {"iterable",
     [](const std::string&, const Value& v, CallArgs&) {
       return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
     }},
    {"lower", [](const std::string&, const Value& v, CallArgs&) { return is_lower_case(v); }},
    {"mapping",
     [](const std::string&, const Value& v, CallArgs&) { return v.is_dict() && !v.dict_data().is_namespace; }},
    {"none", [](const std::string&, const Value& v, CallArgs&) { return v.is_none(); }},
    {"number", [](const std::string&, const Value& v, CallArgs&) { return v.is_number(); }},
    {"odd", test_odd_even},
    {"sameas", [](const std::string& n, const Value& v, CallArgs& c) { return v.same_as(test_arg(n, c)); }},
    {"sequence",
     [](const std::string&, const Value& v, CallArgs&) {
       return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
     }},
    {"string", [](const std::string&, const Value& v, CallArgs&) { return v.is_string(); }},
    {"true", [](const std::string&, const Value& v, CallArgs&) { return v.is_bool() && v.as_bool(); }},
    {"undefined", [](const std::string&, const Value& v, CallArgs&) { return v.is_undefined(); }},
    {"upper", [](const std::string&, const Value& v, CallArgs&) { return is_upper_case(v); }},
    // Comparisons, under their names and their operators' (`x is ge 3`, `select(">=", 3)`).
    {"eq", [](const std::string& n, const Value& v, CallArgs& c) { return v.equals(test_arg(n, c)); }},
    {"equalto", [](const std::string& n, const Value& v, CallArgs& c) { return v.equals(test_arg(n, c)); }},
    {"==", [](const std::string& n, const Value& v, CallArgs& c) { return v.equals(test_arg(n, c)); }},
    {"ne", [](const std::string& n, const Value& v, CallArgs& c) { return !v.equals(test_arg(n, c)); }},
    {"!=", [](const std::string& n, const Value& v, CallArgs& c) { return !v.equals(test_arg(n, c)); }},
    {"lt", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) < 0; }},
    {"<", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) < 0; }},
    {"lessthan",
     [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) < 0; }},
    {"le", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) <= 0; }},
    {"<=", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) <= 0; }},
    {"gt", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) > 0; }},
    {">", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) > 0; }},
    {"greaterthan",
     [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) > 0; }},
    {"ge", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) >= 0; }},
    {">=", [](const std::string& n, const Value& v, CallArgs& c) { return ordered(v, test_arg(n, c), c.line) >= 0; }},
};

}  // namespace

bool is_filter(const std::string& name) { return kFilters.count(name) > 0; }

Value apply_filter(const std::string& name, const Value& v, CallArgs& args) {
  auto it = kFilters.find(name);
  if (it == kFilters.end()) fail("unsupported construct: filter '" + name + "'", args.line);
  return it->second(name, v, args);
}

bool is_test(const std::string& name) { return kTests.count(name) > 0; }

bool apply_test(const std::string& name, const Value& v, CallArgs& args) {
  auto it = kTests.find(name);
  if (it == kTests.end()) fail("unsupported construct: test '" + name + "'", args.line);
  return it->second(name, v, args);
}

}  // namespace tandem::tokenizer::jinja
