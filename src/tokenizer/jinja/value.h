// The values a chat template computes with: Python's types as Jinja2 sees them (None, bool, int,
// float, str, list/tuple, dict, callables) plus Jinja2's Undefined. Lists and dicts have reference
// semantics, as in Python; dicts keep insertion order (json.dumps and Python 3.7+ dicts do).
// Thread-safety: values are not shared between renders; one render runs on one thread.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tandem::tokenizer::jinja {

// A render-time or parse-time failure; `line` is the template line (1-based, 0 when unknown).
class TemplateError : public std::runtime_error {
 public:
  TemplateError(const std::string& message, int line) : std::runtime_error(message), line_(line) {}
  int line() const { return line_; }

 private:
  int line_;
};

class Value;

struct ListData {
  std::vector<Value> items;
  bool is_tuple = false;  // printed as (a, b)
};

struct DictData {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // jinja2's namespace(): attributes may be assigned with {% set ns.x = ... %}
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  int line = 0;
};

struct FunctionData {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // Undefined
  static Value undefined(std::string name) {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value none() { return Value(Kind::kNone); }
  static Value boolean(bool b) {
    Value v(Kind::kBool);
    v.int_ = b;
    return v;
  }
  static Value integer(int64_t i) {
    Value v(Kind::kInt);
    v.int_ = i;
    return v;
  }
  static Value floating(double d) {
    Value v(Kind::kFloat);
    v.float_ = d;
    return v;
  }
  static Value string(std::string s) {
    Value v(Kind::kString);
    v.str_ = std::move(s);
    return v;
  }
  static Value list(std::vector<Value> items = {}, bool is_tuple = false) {
    Value v(Kind::kList);
    v.list_ = std::make_shared<ListData>();
    v.list_->items = std::move(items);
    v.list_->is_tuple = is_tuple;
    return v;
  }
  static Value dict() {
    Value v(Kind::kDict);
    v.dict_ = std::make_shared<DictData>();
    return v;
  }
  static Value function(std::string name, std::function<Value(CallArgs&)> fn) {
    Value v(Kind::kFunction);
    v.fn_ = std::make_shared<FunctionData>(FunctionData{std::move(name), std::move(fn)});
    return v;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  // Python's numbers: bool counts as int.
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat || kind_ == Kind::kBool; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
  double as_float() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }
  // The name an Undefined was looked up by, for error messages.
  const std::string& undefined_name() const { return str_; }
  ListData& list_data() const { return *list_; }
  DictData& dict_data() const { return *dict_; }
  FunctionData& function_data() const { return *fn_; }

  // Python truthiness (Undefined is false).
  bool truthy() const;
  // Python's type name, for error messages ("NoneType", "str", ...).
  std::string type_name() const;
  // Python's str() and repr().
  std::string str() const;
  std::string repr() const;
  // Python's json.dumps(value, ensure_ascii=..., indent=indent, separators=...): what Hugging Face's
  // tojson filter does. indent < 0 means none. Throws TemplateError for values JSON cannot hold.
  std::string to_json(int indent, const std::string& item_separator, const std::string& key_separator,
                      bool sort_keys, bool ensure_ascii = false) const;

  // Python ==, and <, for the types where Python defines them (TemplateError otherwise).
  bool equals(const Value& other) const;
  bool less_than(const Value& other, int line) const;
  // Identity for `is sameas`: same object for containers, equal value and type otherwise.
  bool same_as(const Value& other) const;

 private:
  explicit Value(Kind kind) : kind_(kind) {}
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<ListData> list_;
  std::shared_ptr<DictData> dict_;
  std::shared_ptr<FunctionData> fn_;
};

// Python's repr() of a float (shortest round-trip digits; exponent form outside [1e-4, 1e16)).
std::string python_float_repr(double d);

}  // namespace tandem::tokenizer::jinja
