// The interpreter: statements and expressions; filters and tests are in filters.cpp, Python's value
// semantics in builtins.cpp.
#include "tokenizer/jinja/interpreter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/filters.h"
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
