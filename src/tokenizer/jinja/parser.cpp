// Lexing follows jinja2/lexer.py (3.1) for the default delimiters; parsing follows the operator
// precedence of jinja2/parser.py (condexpr < or < and < not < compare < + - < ~ < * / // % < ** <
// unary, with filters and tests binding to a unary operand).
#include "tokenizer/jinja/parser.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {
namespace {

// ---- Stage 1: the template split into text, {{ }} and {% %} with whitespace control applied ----

struct Segment {
  enum class Type { kText, kVariable, kBlock };
  Type type;
  std::string content;
  int line;
};

bool is_py_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string rstrip_ws(const std::string& s) {
  size_t end = s.size();
  while (end > 0 && is_py_space(s[end - 1])) --end;
  return s.substr(0, end);
}

int count_newlines(const std::string& s, size_t from, size_t to) {
  return static_cast<int>(std::count(s.begin() + static_cast<std::ptrdiff_t>(from), s.begin() + static_cast<std::ptrdiff_t>(to), '\n'));
}

// Position of the closing `close` ("}}" or "%}") of a tag whose body starts at `pos`, skipping
// string literals and, as Jinja's lexer does with its balancing stack, brackets still open
// ({{ {'a': {'b': 1}} }} ends at the last "}}"); npos when missing.
size_t find_tag_end(const std::string& src, size_t pos, const char* close) {
  char quote = 0;
  int depth = 0;
  for (size_t i = pos; i + 1 < src.size(); ++i) {
    const char c = src[i];
    if (quote) {
      if (c == '\\') ++i;
      else if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (depth == 0 && c == close[0] && src[i + 1] == close[1]) {
      return i;
    } else if (c == '(' || c == '[' || c == '{') {
      ++depth;
    } else if ((c == ')' || c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string::npos;
}

std::vector<Segment> segment(const std::string& input) {
  // Jinja normalizes newlines and drops one trailing newline (keep_trailing_newline=False).
  std::string src;
  src.reserve(input.size());
  for (size_t i = 0; i < input.size(); ++i) {
    if (input[i] == '\r') {
      src.push_back('\n');
      if (i + 1 < input.size() && input[i + 1] == '\n') ++i;
    } else {
      src.push_back(input[i]);
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();

  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool line_starting = true;  // the previous tag's match ended with a newline (or we are at the start)
  bool strip_next = false;    // the previous tag ended with '-'
  while (pos <= src.size()) {
    size_t start = pos;
    while (true) {
      start = src.find('{', start);
      if (start == std::string::npos || start + 1 >= src.size()) {
        start = std::string::npos;
        break;
      }
      const char c = src[start + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++start;
    }
    std::string text = src.substr(pos, (start == std::string::npos ? src.size() : start) - pos);
    const int text_line = line;
    line += count_newlines(src, pos, start == std::string::npos ? src.size() : start);
    if (strip_next) {
      size_t n = 0;
      while (n < text.size() && is_py_space(text[n])) ++n;
      line_starting = n > 0 && text[n - 1] == '\n';
      text.erase(0, n);
      strip_next = false;
    }
    if (start == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::Type::kText, text, text_line});
      break;
    }
    const char kind = src[start + 1];
    size_t body = start + 2;
    const char left = body < src.size() ? src[body] : 0;
    if (left == '-' || left == '+') ++body;
    if (left == '-') {
      text = rstrip_ws(text);
    } else if (left != '+' && kind != '{') {
      // lstrip_blocks: drop the indentation before a block or comment tag alone on its line.
      const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
      if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
          std::all_of(text.begin() + static_cast<std::ptrdiff_t>(l_pos), text.end(), is_py_space)) {
        text.erase(l_pos);
      }
    }
    if (!text.empty()) out.push_back({Segment::Type::kText, text, text_line});

    const char* close = kind == '{' ? "}}" : (kind == '%' ? "%}" : "#}");
    size_t end;
    if (kind == '#') {
      end = src.find("#}", body);
    } else {
      end = find_tag_end(src, body, close);
    }
    if (end == std::string::npos) {
      throw TemplateError(std::string("unclosed tag: missing '") + close + "'", line);
    }
    std::string content = src.substr(body, end - body);
    const char right = !content.empty() ? content.back() : 0;
    if (kind != '#' && (right == '-' || right == '+')) content.pop_back();
    if (kind == '#' && (right == '-' || right == '+')) content.pop_back();
    const int tag_line = line;
    line += count_newlines(src, start, end + 2);
    pos = end + 2;
    line_starting = false;
    if (right == '-') {
      strip_next = true;
    } else if (right != '+' && kind != '{' && pos < src.size() && src[pos] == '\n') {
      ++pos;  // trim_blocks
      ++line;
      line_starting = true;
    }
    if (kind == '#') continue;
    if (kind == '{') {
      out.push_back({Segment::Type::kVariable, content, tag_line});
      continue;
    }
    // {% raw %} ... {% endraw %}: the text between is literal.
    std::string trimmed = content;
    trimmed.erase(0, trimmed.find_first_not_of(" \t\n"));
    trimmed.erase(trimmed.find_last_not_of(" \t\n") + 1);
    if (trimmed == "raw") {
      size_t search = pos;
      while (true) {
        const size_t open = src.find("{%", search);
        if (open == std::string::npos) throw TemplateError("missing {% endraw %}", tag_line);
        size_t p = open + 2;
        const bool strip_before = p < src.size() && src[p] == '-';
        if (p < src.size() && (src[p] == '-' || src[p] == '+')) ++p;
        while (p < src.size() && is_py_space(src[p])) ++p;
        if (src.compare(p, 6, "endraw") != 0) {
          search = open + 2;
          continue;
        }
        p += 6;
        while (p < src.size() && is_py_space(src[p])) ++p;
        const bool strip_after = p < src.size() && src[p] == '-';
        if (strip_after) ++p;
        if (src.compare(p, 2, "%}") != 0) throw TemplateError("malformed {% endraw %}", tag_line);
        std::string raw = src.substr(pos, open - pos);
        if (strip_next) {  // {% raw -%}
          raw.erase(0, raw.find_first_not_of(" \t\n\r\v\f") == std::string::npos ? raw.size() : raw.find_first_not_of(" \t\n\r\v\f"));
          strip_next = false;
        }
        if (strip_before) raw = rstrip_ws(raw);
        if (!raw.empty()) out.push_back({Segment::Type::kText, raw, tag_line});
        line += count_newlines(src, pos, p + 2);
        pos = p + 2;
        if (strip_after) {
          strip_next = true;
        } else if (pos < src.size() && src[pos] == '\n') {
          ++pos;  // trim_blocks applies after {% endraw %} too
          ++line;
          line_starting = true;
        }
        break;
      }
      continue;
    }
    out.push_back({Segment::Type::kBlock, content, tag_line});
  }
  return out;
}

// ---- Stage 2: tokens of one tag ----

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp, kEnd };
  Type type;
  std::string text;  // name, operator, or the decoded string
  int line;
};

void append_escape(const std::string& s, size_t* i, std::string* out, int line) {
  const char c = s[*i];
  auto hex = [&](int n) {
    if (*i + static_cast<size_t>(n) >= s.size()) throw TemplateError("truncated \\x/\\u escape in a string literal", line);
    const std::string digits = s.substr(*i + 1, static_cast<size_t>(n));
    for (char d : digits)
      if (!std::isxdigit(static_cast<unsigned char>(d))) throw TemplateError("malformed escape in a string literal", line);
    *i += static_cast<size_t>(n);
    append_utf8(static_cast<char32_t>(std::stoul(digits, nullptr, 16)), out);
  };
  switch (c) {
    case 'n': out->push_back('\n'); break;
    case 't': out->push_back('\t'); break;
    case 'r': out->push_back('\r'); break;
    case '\\': out->push_back('\\'); break;
    case '\'': out->push_back('\''); break;
    case '"': out->push_back('"'); break;
    case 'a': out->push_back('\a'); break;
    case 'b': out->push_back('\b'); break;
    case 'f': out->push_back('\f'); break;
    case 'v': out->push_back('\v'); break;
    case '\n': break;  // line continuation
    case 'x': hex(2); break;
    case 'u': hex(4); break;
    case 'U': hex(8); break;
    case 'N': throw TemplateError("unsupported construct: \\N{...} escape in a string literal", line);
    default:
      if (c >= '0' && c <= '7') {
        int value = 0, n = 0;
        while (n < 3 && *i < s.size() && s[*i] >= '0' && s[*i] <= '7') {
          value = value * 8 + (s[*i] - '0');
          ++*i;
          ++n;
        }
        --*i;
        append_utf8(static_cast<char32_t>(value), out);
      } else {
        // Python keeps unknown escapes as written.
        out->push_back('\\');
        out->push_back(c);
      }
  }
}

std::vector<Token> tokenize(const std::string& s, int line) {
  std::vector<Token> tokens;
  size_t i = 0;
  static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                     "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};
  while (i < s.size()) {
    const char c = s[i];
    if (c == '\n') {
      ++line;
      ++i;
      continue;
    }
    if (is_py_space(c)) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::Type::kName, s.substr(i, j - i), line});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      auto digits = [&] {
        while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      };
      digits();
      bool is_float = false;
      const bool after_dot = !tokens.empty() && tokens.back().type == Token::Type::kOp && tokens.back().text == ".";
      if (!after_dot && j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        digits();
      }
      if (!after_dot && j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          digits();
        }
      }
      std::string text = s.substr(i, j - i);
      text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
      tokens.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, text, line});
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string value;
      size_t j = i + 1;
      const int start_line = line;
      while (true) {
        if (j >= s.size()) throw TemplateError("unterminated string literal", start_line);
        if (s[j] == c) break;
        if (s[j] == '\\' && j + 1 < s.size()) {
          ++j;
          if (s[j] == '\n') ++line;
          append_escape(s, &j, &value, start_line);
          ++j;
          continue;
        }
        if (s[j] == '\n') ++line;
        value.push_back(s[j++]);
      }
      tokens.push_back({Token::Type::kString, value, start_line});
      i = j + 1;
      continue;
    }
    bool matched = false;
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (s.compare(i, n, op) == 0) {
        tokens.push_back({Token::Type::kOp, op, line});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) throw TemplateError(std::string("unsupported construct: unexpected character '") + c + "'", line);
  }
  tokens.push_back({Token::Type::kEnd, "", line});
  return tokens;
}

// ---- Stage 3: the parser ----

const std::set<std::string>& supported_filters() {
  static const std::set<std::string> k = {
      "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent", "int",
      "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
      "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim",
      "unique", "upper", "wordcount"};
  return k;
}

const std::set<std::string>& supported_tests() {
  static const std::set<std::string> k = {
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "==", "escaped", "even", "false", "float",
      "ge", ">=", "gt", ">", "greaterthan", "in", "integer", "iterable", "le", "<=", "lower", "lt", "<", "lessthan",
      "mapping", "ne", "!=", "none", "number", "odd", "sameas", "sequence", "string", "true", "undefined", "upper"};
  return k;
}

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
        e->literal = Value::floating(std::stod(t.text));
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
          index->literal = Value::integer(std::stoll(cur().text));
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
        if (!supported_filters().count(e->name)) fail("unsupported construct: filter '" + e->name + "'", line);
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
        if (!supported_tests().count(e->name)) fail("unsupported construct: test '" + e->name + "'", line);
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
