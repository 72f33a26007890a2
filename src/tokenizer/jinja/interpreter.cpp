// The interpreter: statements, expressions, filters and tests; Python's value semantics are in
// builtins.cpp.
#include "tokenizer/jinja/interpreter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {
namespace {

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
      // Python stops runaway recursion with RecursionError; a crash here would take the server down.
      if (macro_depth_ >= kMaxMacroDepth) fail("macro '" + macro->name + "' nested too deeply (recursion?)", c.line);
      ++macro_depth_;
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
      --macro_depth_;
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
        if (const auto d = py_float(s); d && std::isfinite(*d)) return Value::integer(static_cast<int64_t>(*d));
      }
      return dflt;
    }
    if (name == "float") {
      Args a(c, "float", {"default"});
      if (v.is_number()) return Value::floating(v.as_float());
      if (v.is_string()) {
        if (const auto d = py_float(v.as_string())) return Value::floating(*d);
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

  static constexpr int kMaxMacroDepth = 200;
  std::vector<Frame> frames_;
  size_t barrier_ = 0;
  int macro_depth_ = 0;  // inside a macro: frames below this index (but 0) are not visible
};

}  // namespace

std::string render(const Body& body, std::unordered_map<std::string, Value> globals) {
  return Interpreter(std::move(globals)).run(body);
}

}  // namespace tandem::tokenizer::jinja
