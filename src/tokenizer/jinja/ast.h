// The syntax tree of a Jinja2 template, as the parser builds it and the interpreter walks it.
// Every node carries its template line for error messages. Ownership: a node owns its children.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace tandem::tokenizer::jinja {

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // children: items
    kTuple,     // children: items
    kDict,      // children: key, value, key, value, ...
    kGetAttr,   // children[0] . name
    kGetItem,   // children[0] [ children[1] ]
    kSlice,     // children[0] [ children[1] : children[2] : children[3] ] (null where left out)
    kCall,      // children[0] ( children[1..] ), arg_names[i] names children[i + 1] ("" = positional)
    kFilter,    // children[0] | name ( children[1..] )
    kTest,      // children[0] is [not] name ( children[1..] ); negated
    kUnary,     // name in {"-", "+", "not"}, children[0]
    kBinary,    // children[0] name children[1]: + - * / // % ** ~ and or
    kCompare,   // children[0] arg_names[0] children[1] arg_names[1] children[2] ...: == != < > <= >= in "not in"
    kCondition  // children[0] if children[1] else children[2] (null when no else)
  };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<std::unique_ptr<Expr>> children;
  std::vector<std::string> arg_names;
  bool negated = false;

  Expr(Kind k, int l) : kind(k), line(l) {}
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // conditions[i] -> bodies[i]; a trailing body without condition is the else
    kFor,       // for targets in expr [if filter] bodies[0] [else bodies[1]]
    kSet,       // set targets = expr, or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %} bodies[0] {% endset
    kMacro,     // macro name(targets with defaults) bodies[0]
    kBreak,
    kContinue,
    kScope      // bodies[0] rendered as is ({% generation %} of Hugging Face's templates)
  };
  Kind kind;
  int line = 0;
  std::string text;
  std::string name;    // macro name; attribute of a namespace set
  std::unique_ptr<Expr> expr;
  std::unique_ptr<Expr> filter;
  std::vector<std::unique_ptr<Expr>> conditions;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::vector<std::unique_ptr<Expr>> defaults;  // macro parameters' defaults, aligned with targets (null = none)

  Node(Kind k, int l) : kind(k), line(l) {}
};

}  // namespace tandem::tokenizer::jinja
