// Parsing follows the operator precedence of jinja2/parser.py (condexpr < or < and < not < compare <
// + - < ~ < * / // % < ** < unary, with filters and tests binding to a unary operand), over the
// segments and tokens of lexer.h.
#include "tokenizer/jinja/parser.h"

#include <algorithm>
#include <set>

#include "tokenizer/jinja/filters.h"
#include "tokenizer/jinja/lexer.h"

namespace tandem::tokenizer::jinja {
namespace {

// ---- Stage 3: the parser ----

class Parser {
 public:
  explicit Parser(std::vector<Segment> segments) : segs_(std::move(segments)) {}

  Body parse_all() {
    std::string end;
    return parse_body({}, &end);
  }

 private:
  // Parses nodes until a block tag whose keyword is in `ends`; leaves its remaining tokens in toks_.
  Body parse_body(const std::vector<std::string>& ends, std::string* which, int opened_line = 0) {
    Body body;
    while (seg_ < segs_.size()) {
      const Segment& seg = segs_[seg_++];
      if (seg.type == Segment::Type::kText) {
        auto node = std::make_unique<Node>(Node::Kind::kText, seg.line);
        node->text = seg.content;
        body.push_back(std::move(node));
        continue;
      }
      toks_ = tokenize(seg.content, seg.line);
      tok_ = 0;
      if (seg.type == Segment::Type::kVariable) {
        auto node = std::make_unique<Node>(Node::Kind::kOutput, seg.line);
        node->expr = parse_tuple();
        expect_end();
        body.push_back(std::move(node));
        continue;
      }
      const Token& keyword = cur();
      if (keyword.type != Token::Type::kName) fail("expected a tag name after '{%'", keyword.line);
      if (std::find(ends.begin(), ends.end(), keyword.text) != ends.end()) {
        ++tok_;
        *which = keyword.text;
        return body;
      }
      body.push_back(parse_statement());
    }
    if (!ends.empty()) fail("missing {% " + ends.back() + " %} for the tag opened", opened_line);
    return body;
  }

  std::unique_ptr<Node> parse_statement() {
    const Token keyword = cur();
    ++tok_;
    const std::string& k = keyword.text;
    const int line = keyword.line;
    if (k == "if") return parse_if(line);
    if (k == "for") return parse_for(line);
    if (k == "set") return parse_set(line);
    if (k == "macro") return parse_macro(line);
    if (k == "break" || k == "continue") {
      expect_end();
      return std::make_unique<Node>(k == "break" ? Node::Kind::kBreak : Node::Kind::kContinue, line);
    }
    if (k == "generation") {
      expect_end();
      auto node = std::make_unique<Node>(Node::Kind::kScope, line);
      std::string which;
      node->bodies.push_back(parse_body({"endgeneration"}, &which, line));
      expect_end();
      return node;
    }
    static const std::set<std::string> kKnown = {"call", "filter", "include", "import", "from", "extends", "block",
                                                  "with", "autoescape", "do", "trans"};
    if (kKnown.count(k)) fail("unsupported construct: {% " + k + " %}", line);
    fail("unsupported construct: unknown tag '" + k + "'", line);
  }

  std::unique_ptr<Node> parse_if(int line) {
    auto node = std::make_unique<Node>(Node::Kind::kIf, line);
    node->conditions.push_back(parse_expression());
    expect_end();
    while (true) {
      std::string which;
      node->bodies.push_back(parse_body({"elif", "else", "endif"}, &which, line));
      if (which == "elif") {
        node->conditions.push_back(parse_expression());
        expect_end();
      } else if (which == "else") {
        expect_end();
        node->bodies.push_back(parse_body({"endif"}, &which, line));
        expect_end();
        return node;
      } else {
        expect_end();
        return node;
      }
    }
  }

  std::unique_ptr<Node> parse_for(int line) {
    auto node = std::make_unique<Node>(Node::Kind::kFor, line);
    const bool paren = accept_op("(");
    do {
      node->targets.push_back(expect_name());
    } while (accept_op(","));
    if (paren) expect_op(")");
    if (!accept_name("in")) fail("expected 'in' in {% for %}", cur().line);
    node->expr = parse_expression(/*with_condexpr=*/false);
    if (accept_name("if")) node->filter = parse_expression(/*with_condexpr=*/false);
    if (accept_name("recursive")) fail("unsupported construct: recursive for loop", line);
    expect_end();
    std::string which;
    node->bodies.push_back(parse_body({"else", "endfor"}, &which, line));
    if (which == "else") {
      expect_end();
      node->bodies.push_back(parse_body({"endfor"}, &which, line));
    }
    expect_end();
    return node;
  }

  std::unique_ptr<Node> parse_set(int line) {
    std::vector<std::string> targets{expect_name()};
    std::string attr;
    if (accept_op(".")) {
      attr = expect_name();
    } else {
      while (accept_op(",")) targets.push_back(expect_name());
    }
    if (accept_op("=")) {
      auto node = std::make_unique<Node>(Node::Kind::kSet, line);
      node->targets = targets;
      node->name = attr;
      node->expr = parse_tuple();
      expect_end();
      return node;
    }
    if (!attr.empty() || targets.size() != 1) fail("unsupported construct: block {% set %} with this target", line);
    if (cur().type == Token::Type::kOp && cur().text == "|") fail("unsupported construct: filtered block {% set %}", line);
    expect_end();
    auto node = std::make_unique<Node>(Node::Kind::kSetBlock, line);
    node->targets = targets;
    std::string which;
    node->bodies.push_back(parse_body({"endset"}, &which, line));
    expect_end();
    return node;
  }

  std::unique_ptr<Node> parse_macro(int line) {
    auto node = std::make_unique<Node>(Node::Kind::kMacro, line);
    node->name = expect_name();
    expect_op("(");
    if (!accept_op(")")) {
      do {
        if (cur().type == Token::Type::kOp && cur().text == "*") fail("unsupported construct: *args in a macro", line);
        node->targets.push_back(expect_name());
        node->defaults.push_back(accept_op("=") ? parse_expression() : nullptr);
      } while (accept_op(","));
      expect_op(")");
    }
    expect_end();
    std::string which;
    node->bodies.push_back(parse_body({"endmacro"}, &which, line));
    expect_end();
    return node;
  }

  // ---- expressions ----

  std::unique_ptr<Expr> parse_tuple() {
    const int line = cur().line;
    auto first = parse_expression();
    if (!(cur().type == Token::Type::kOp && cur().text == ",")) return first;
    auto tuple = std::make_unique<Expr>(Expr::Kind::kTuple, line);
    tuple->children.push_back(std::move(first));
    while (accept_op(",")) {
      if (cur().type == Token::Type::kEnd) break;
      tuple->children.push_back(parse_expression());
    }
    return tuple;
  }

  std::unique_ptr<Expr> parse_expression(bool with_condexpr = true) {
    if (!with_condexpr) return parse_or();
    auto expr = parse_or();
    while (cur().type == Token::Type::kName && cur().text == "if") {
      const int line = cur().line;
      ++tok_;
      auto cond = std::make_unique<Expr>(Expr::Kind::kCondition, line);
      auto test = parse_or();
      std::unique_ptr<Expr> otherwise;
      if (accept_name("else")) otherwise = parse_expression();
      cond->children.push_back(std::move(expr));
      cond->children.push_back(std::move(test));
      cond->children.push_back(std::move(otherwise));
      expr = std::move(cond);
    }
    return expr;
  }

  std::unique_ptr<Expr> binary(const std::string& op, std::unique_ptr<Expr> left, std::unique_ptr<Expr> right, int line) {
    auto e = std::make_unique<Expr>(Expr::Kind::kBinary, line);
    e->name = op;
    e->children.push_back(std::move(left));
    e->children.push_back(std::move(right));
    return e;
  }

  std::unique_ptr<Expr> parse_or() {
    auto left = parse_and();
    while (cur().type == Token::Type::kName && cur().text == "or") {
      const int line = cur().line;
      ++tok_;
      left = binary("or", std::move(left), parse_and(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_and() {
    auto left = parse_not();
    while (cur().type == Token::Type::kName && cur().text == "and") {
      const int line = cur().line;
      ++tok_;
      left = binary("and", std::move(left), parse_not(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_not() {
    if (cur().type == Token::Type::kName && cur().text == "not") {
      auto e = std::make_unique<Expr>(Expr::Kind::kUnary, cur().line);
      ++tok_;
      e->name = "not";
      e->children.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  std::unique_ptr<Expr> parse_compare() {
    const int line = cur().line;
    auto first = parse_math1();
    std::unique_ptr<Expr> cmp;
    while (true) {
      std::string op;
      const Token& t = cur();
      if (t.type == Token::Type::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == ">" ||
                                         t.text == "<=" || t.text == ">=")) {
        op = t.text;
        ++tok_;
      } else if (t.type == Token::Type::kName && t.text == "in") {
        op = "in";
        ++tok_;
      } else if (t.type == Token::Type::kName && t.text == "not" && peek(1).type == Token::Type::kName &&
                 peek(1).text == "in") {
        op = "not in";
        tok_ += 2;
      } else {
        break;
      }
      if (!cmp) {
        cmp = std::make_unique<Expr>(Expr::Kind::kCompare, line);
        cmp->children.push_back(std::move(first));
      }
      cmp->arg_names.push_back(op);
      cmp->children.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  std::unique_ptr<Expr> parse_math1() {
    auto left = parse_concat();
    while (cur().type == Token::Type::kOp && (cur().text == "+" || cur().text == "-")) {
      const std::string op = cur().text;
      const int line = cur().line;
      ++tok_;
      left = binary(op, std::move(left), parse_concat(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_concat() {
    auto left = parse_math2();
    while (cur().type == Token::Type::kOp && cur().text == "~") {
      const int line = cur().line;
      ++tok_;
      left = binary("~", std::move(left), parse_math2(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_math2() {
    auto left = parse_pow();
    while (cur().type == Token::Type::kOp &&
           (cur().text == "*" || cur().text == "/" || cur().text == "//" || cur().text == "%")) {
      const std::string op = cur().text;
      const int line = cur().line;
      ++tok_;
      left = binary(op, std::move(left), parse_pow(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_pow() {
    auto left = parse_unary();
    while (cur().type == Token::Type::kOp && cur().text == "**") {
      const int line = cur().line;
      ++tok_;
      left = binary("**", std::move(left), parse_unary(), line);
    }
    return left;
  }

  std::unique_ptr<Expr> parse_unary(bool with_filter = true) {
    std::unique_ptr<Expr> node;
    if (cur().type == Token::Type::kOp && (cur().text == "-" || cur().text == "+")) {
      node = std::make_unique<Expr>(Expr::Kind::kUnary, cur().line);
      node->name = cur().text;
      ++tok_;
      node->children.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  std::unique_ptr<Expr> parse_primary() {
    const Token t = cur();
    ++tok_;
    switch (t.type) {
      case Token::Type::kName: {
        auto e = std::make_unique<Expr>(Expr::Kind::kLiteral, t.line);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value::boolean(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value::boolean(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::none();
        } else {
          e->kind = Expr::Kind::kName;
          e->name = t.text;
        }
        return e;
      }
      case Token::Type::kString: {
        std::string s = t.text;
        while (cur().type == Token::Type::kString) s += cur().text, ++tok_;  // adjacent literals concatenate
        auto e = std::make_unique<Expr>(Expr::Kind::kLiteral, t.line);
        e->literal = Value::string(s);
        return e;
      }
      case Token::Type::kInt: {
        auto e = std::make_unique<Expr>(Expr::Kind::kLiteral, t.line);
        try {
          e->literal = Value::integer(std::stoll(t.text));
        } catch (const std::exception&) {
          fail("unsupported construct: integer literal out of range", t.line);
        }
        return e;
      }
      case Token::Type::kFloat: {
        auto e = std::make_unique<Expr>(Expr::Kind::kLiteral, t.line);
        try {
          e->literal = Value::floating(std::stod(t.text));
        } catch (const std::exception&) {  // out of double's range (tests/fuzz/chat_template_fuzz)
          fail("unsupported construct: float literal out of range", t.line);
        }
        return e;
      }
      case Token::Type::kOp:
        if (t.text == "(") {
          if (accept_op(")")) return std::make_unique<Expr>(Expr::Kind::kTuple, t.line);
          auto inner = parse_expression();
          if (cur().type == Token::Type::kOp && cur().text == ",") {
            auto tuple = std::make_unique<Expr>(Expr::Kind::kTuple, t.line);
            tuple->children.push_back(std::move(inner));
            while (accept_op(",")) {
              if (cur().type == Token::Type::kOp && cur().text == ")") break;
              tuple->children.push_back(parse_expression());
            }
            inner = std::move(tuple);
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          auto list = std::make_unique<Expr>(Expr::Kind::kList, t.line);
          while (!accept_op("]")) {
            if (!list->children.empty()) {
              expect_op(",");
              if (accept_op("]")) break;
            }
            list->children.push_back(parse_expression());
          }
          return list;
        }
        if (t.text == "{") {
          auto dict = std::make_unique<Expr>(Expr::Kind::kDict, t.line);
          while (!accept_op("}")) {
            if (!dict->children.empty()) {
              expect_op(",");
              if (accept_op("}")) break;
            }
            dict->children.push_back(parse_expression());
            expect_op(":");
            dict->children.push_back(parse_expression());
          }
          return dict;
        }
        break;
      default:
        break;
    }
    fail(t.type == Token::Type::kEnd ? "unexpected end of tag" : "unexpected '" + t.text + "'", t.line);
  }

  std::unique_ptr<Expr> parse_postfix(std::unique_ptr<Expr> node) {
    while (cur().type == Token::Type::kOp) {
      const std::string& op = cur().text;
      const int line = cur().line;
      if (op == ".") {
        ++tok_;
        if (cur().type == Token::Type::kInt) {
          auto e = std::make_unique<Expr>(Expr::Kind::kGetItem, line);
          auto index = std::make_unique<Expr>(Expr::Kind::kLiteral, line);
          // `x.99999999999999999999` escaped as std::out_of_range (tests/fuzz/chat_template_fuzz).
          try {
            index->literal = Value::integer(std::stoll(cur().text));
          } catch (const std::exception&) {
            fail("unsupported construct: integer index out of range", line);
          }
          ++tok_;
          e->children.push_back(std::move(node));
          e->children.push_back(std::move(index));
          node = std::move(e);
          continue;
        }
        auto e = std::make_unique<Expr>(Expr::Kind::kGetAttr, line);
        e->name = expect_name();
        e->children.push_back(std::move(node));
        node = std::move(e);
      } else if (op == "[") {
        ++tok_;
        node = parse_subscript(std::move(node), line);
      } else if (op == "(") {
        node = parse_call(std::move(node));
      } else {
        break;
      }
    }
    return node;
  }

  std::unique_ptr<Expr> parse_subscript(std::unique_ptr<Expr> obj, int line) {
    std::unique_ptr<Expr> parts[3];
    int n = 0;
    bool slice = false;
    while (true) {
      if (cur().type == Token::Type::kOp && cur().text == ":") {
        slice = true;
        ++tok_;
        if (++n > 2) fail("malformed slice", line);
        continue;
      }
      if (cur().type == Token::Type::kOp && cur().text == "]") {
        ++tok_;
        break;
      }
      if (parts[n]) fail("malformed subscript", line);
      parts[n] = parse_expression();
    }
    if (!slice) {
      if (!parts[0]) fail("empty subscript", line);
      auto e = std::make_unique<Expr>(Expr::Kind::kGetItem, line);
      e->children.push_back(std::move(obj));
      e->children.push_back(std::move(parts[0]));
      return e;
    }
    auto e = std::make_unique<Expr>(Expr::Kind::kSlice, line);
    e->children.push_back(std::move(obj));
    for (auto& p : parts) e->children.push_back(std::move(p));
    return e;
  }

  // Appends "( args )" to `e` (whose children[0] is the callee or operand).
  void parse_args(Expr* e) {
    expect_op("(");
    bool first = true;
    while (!accept_op(")")) {
      if (!first) {
        expect_op(",");
        if (accept_op(")")) break;
      }
      first = false;
      if (cur().type == Token::Type::kOp && (cur().text == "*" || cur().text == "**")) {
        fail("unsupported construct: *args/**kwargs in a call", cur().line);
      }
      if (cur().type == Token::Type::kName && peek(1).type == Token::Type::kOp && peek(1).text == "=") {
        e->arg_names.push_back(cur().text);
        tok_ += 2;
      } else {
        if (std::any_of(e->arg_names.begin(), e->arg_names.end(), [](const std::string& n) { return !n.empty(); })) {
          fail("positional argument follows keyword argument", cur().line);
        }
        e->arg_names.push_back("");
      }
      e->children.push_back(parse_expression());
    }
  }

  std::unique_ptr<Expr> parse_call(std::unique_ptr<Expr> callee) {
    auto e = std::make_unique<Expr>(Expr::Kind::kCall, cur().line);
    e->children.push_back(std::move(callee));
    parse_args(e.get());
    return e;
  }

  std::unique_ptr<Expr> parse_filter_expr(std::unique_ptr<Expr> node) {
    while (true) {
      if (cur().type == Token::Type::kOp && cur().text == "|") {
        const int line = cur().line;
        ++tok_;
        auto e = std::make_unique<Expr>(Expr::Kind::kFilter, line);
        e->name = expect_name();
        while (accept_op(".")) e->name += "." + expect_name();
        if (!is_filter(e->name)) fail("unsupported construct: filter '" + e->name + "'", line);
        e->children.push_back(std::move(node));
        if (cur().type == Token::Type::kOp && cur().text == "(") parse_args(e.get());
        node = std::move(e);
      } else if (cur().type == Token::Type::kName && cur().text == "is") {
        const int line = cur().line;
        ++tok_;
        auto e = std::make_unique<Expr>(Expr::Kind::kTest, line);
        e->negated = accept_name("not");
        const Token& t = cur();
        if (t.type == Token::Type::kName) {
          e->name = t.text;
        } else if (t.type == Token::Type::kOp && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                                  t.text == ">" || t.text == "<=" || t.text == ">=")) {
          e->name = t.text;
        } else {
          fail("expected a test name after 'is'", line);
        }
        ++tok_;
        if (e->name == "true" || e->name == "True") e->name = "true";
        if (e->name == "false" || e->name == "False") e->name = "false";
        if (e->name == "None") e->name = "none";
        if (!is_test(e->name)) fail("unsupported construct: test '" + e->name + "'", line);
        e->children.push_back(std::move(node));
        const Token& next = cur();
        if (next.type == Token::Type::kOp && next.text == "(") {
          parse_args(e.get());
        } else if ((next.type == Token::Type::kName || next.type == Token::Type::kString ||
                    next.type == Token::Type::kInt || next.type == Token::Type::kFloat ||
                    (next.type == Token::Type::kOp && (next.text == "[" || next.text == "{"))) &&
                   !(next.type == Token::Type::kName &&
                     (next.text == "else" || next.text == "or" || next.text == "and"))) {
          if (next.type == Token::Type::kName && next.text == "is") fail("cannot chain tests with 'is'", line);
          e->arg_names.push_back("");
          e->children.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(e);
      } else if (cur().type == Token::Type::kOp && cur().text == "(") {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  // ---- token helpers ----

  const Token& cur() const { return toks_[tok_]; }
  const Token& peek(size_t n) const { return toks_[std::min(tok_ + n, toks_.size() - 1)]; }
  bool accept_op(const char* op) {
    if (cur().type == Token::Type::kOp && cur().text == op) {
      ++tok_;
      return true;
    }
    return false;
  }
  bool accept_name(const char* name) {
    if (cur().type == Token::Type::kName && cur().text == name) {
      ++tok_;
      return true;
    }
    return false;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(std::string("expected '") + op + "', got '" + cur().text + "'", cur().line);
  }
  std::string expect_name() {
    if (cur().type != Token::Type::kName) fail("expected a name, got '" + cur().text + "'", cur().line);
    return toks_[tok_++].text;
  }
  void expect_end() {
    if (cur().type != Token::Type::kEnd) fail("unexpected '" + cur().text + "' (expected the end of the tag)", cur().line);
  }
  [[noreturn]] void fail(const std::string& message, int line) { throw TemplateError(message, line); }

  std::vector<Segment> segs_;
  size_t seg_ = 0;
  std::vector<Token> toks_;
  size_t tok_ = 0;
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(segment(source)).parse_all(); }

}  // namespace tandem::tokenizer::jinja
