// A recursive-descent parser from a regex pattern to an automaton.h tree (see regex.h).
#include "structured/regex.h"

#include <string>

#include "common/utf8.h"

namespace tandem::structured {
namespace {

// The characters one class or atom stands for: ASCII as a set, the non-ASCII part as "all of them"
// and/or a list of single code points (UTF-8).
struct CharSet {
  std::bitset<128> ascii;
  bool all_non_ascii = false;
  std::vector<std::string> code_points;
};

class Parser {
 public:
  Parser(std::string_view p, const RegexOptions& o) : p_(p), o_(o) {}

  NodePtr parse() {
    if (!p_.empty() && p_[0] == '^') ++i_;
    NodePtr n = parse_alt();
    if (i_ < p_.size()) fail("unbalanced ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw GrammarError("regex: " + what + " at position " + std::to_string(i_) + " of '" + std::string(p_) + "'");
  }
  bool at_end() const { return i_ >= p_.size(); }
  char peek() const { return p_[i_]; }

  NodePtr parse_alt() {
    std::vector<NodePtr> alts{parse_concat()};
    while (!at_end() && peek() == '|') {
      ++i_;
      alts.push_back(parse_concat());
    }
    return alt(std::move(alts));
  }

  NodePtr parse_concat() {
    std::vector<NodePtr> items;
    while (!at_end() && peek() != '|' && peek() != ')') {
      if (peek() == '$') {
        ++i_;
        if (!at_end() && peek() != ')' && peek() != '|') fail("'$' is supported only at the end");
        continue;
      }
      if (peek() == '^') fail("'^' is supported only at the start");
      NodePtr atom = parse_atom();
      items.push_back(parse_quantifier(std::move(atom)));
    }
    if (items.empty()) return empty_node();
    return seq(std::move(items));
  }

  NodePtr parse_quantifier(NodePtr atom) {
    for (int count = 0; !at_end();) {
      int lo, hi;
      const char c = peek();
      if (c == '*') {
        lo = 0, hi = -1, ++i_;
      } else if (c == '+') {
        lo = 1, hi = -1, ++i_;
      } else if (c == '?') {
        lo = 0, hi = 1, ++i_;
      } else if (c == '{' && i_ + 1 < p_.size() && std::isdigit(static_cast<unsigned char>(p_[i_ + 1]))) {
        ++i_;
        lo = number();
        hi = lo;
        if (!at_end() && peek() == ',') {
          ++i_;
          hi = (!at_end() && peek() == '}') ? -1 : number();
        }
        if (at_end() || peek() != '}') fail("unterminated '{'");
        ++i_;
        if (hi >= 0 && hi < lo) fail("inverted bounds");
      } else {
        break;
      }
      if (!at_end() && peek() == '?') ++i_;  // lazy: the same language
      if (!at_end() && peek() == '+') fail("possessive quantifiers are not supported");
      if (++count > 3) fail("more than 3 quantifiers in a row");
      atom = repeat(std::move(atom), lo, hi);
    }
    return atom;
  }

  int number() {
    int v = 0;
    if (at_end() || !std::isdigit(static_cast<unsigned char>(peek()))) fail("expected a number");
    while (!at_end() && std::isdigit(static_cast<unsigned char>(peek()))) {
      v = v * 10 + (peek() - '0');
      if (v > o_.max_repeat) fail("a repetition bound above " + std::to_string(o_.max_repeat));
      ++i_;
    }
    return v;
  }

  NodePtr parse_atom() {
    const char c = peek();
    if (c == '(') {
      if (++depth_ > kMaxNesting) fail("groups nested deeper than " + std::to_string(kMaxNesting));
      ++i_;
      if (!at_end() && peek() == '?') {
        ++i_;
        if (!at_end() && peek() == ':') {
          ++i_;
        } else if (!at_end() && (peek() == 'P' || peek() == '<') &&
                   !(peek() == '<' && i_ + 1 < p_.size() && (p_[i_ + 1] == '=' || p_[i_ + 1] == '!'))) {
          if (peek() == 'P') ++i_;
          if (at_end() || peek() != '<') fail("unsupported group syntax");
          while (!at_end() && peek() != '>') ++i_;
          if (at_end()) fail("unterminated group name");
          ++i_;
        } else {
          fail("lookaround and inline flags are not supported");
        }
      }
      NodePtr inner = parse_alt();
      if (at_end() || peek() != ')') fail("missing ')'");
      ++i_;
      --depth_;
      return inner;
    }
    if (c == '[') return to_node(parse_class());
    if (c == '.') {
      ++i_;
      CharSet s;
      s.ascii.set();
      s.ascii.reset('\n');
      s.all_non_ascii = true;
      return to_node(s);
    }
    if (c == '\\') return to_node(parse_escape(/*in_class=*/false));
    if (c == '*' || c == '+' || c == '?' || c == '{') fail("nothing to repeat");
    CharSet s;
    add_code_point(read_code_point(), &s);
    return to_node(s);
  }

  // One UTF-8 character of the pattern as a code point.
  uint32_t read_code_point() {
    const unsigned char b = static_cast<unsigned char>(p_[i_]);
    int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    if (i_ + len > p_.size()) fail("truncated UTF-8");
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(p_[i_ + k]) & 0x3F);
    i_ += len;
    return cp;
  }

  static void add_code_point(uint32_t cp, CharSet* s) {
    if (cp < 0x80) {
      s->ascii.set(cp);
    } else {
      std::string u;
      append_utf8(cp, &u);
      s->code_points.push_back(u);
    }
  }

  static void add_class_escape(char k, CharSet* s) {
    CharSet t;
    const char lower = static_cast<char>(std::tolower(k));
    for (int c = 0; c < 128; ++c) {
      const bool in = lower == 'd'   ? std::isdigit(c) != 0
                      : lower == 'w' ? (std::isalnum(c) != 0 || c == '_')
                                     : (c == ' ' || (c >= '\t' && c <= '\r'));
      if (in) t.ascii.set(c);
    }
    if (k != lower) {  // \D \W \S: the complement, non-ASCII included
      t.ascii.flip();
      t.all_non_ascii = true;
    }
    s->ascii |= t.ascii;
    s->all_non_ascii = s->all_non_ascii || t.all_non_ascii;
  }

  CharSet parse_escape(bool in_class) {
    ++i_;
    if (at_end()) fail("trailing '\\'");
    const char k = peek();
    ++i_;
    CharSet s;
    switch (k) {
      case 'd': case 'D': case 'w': case 'W': case 's': case 'S': add_class_escape(k, &s); return s;
      case 'n': s.ascii.set('\n'); return s;
      case 't': s.ascii.set('\t'); return s;
      case 'r': s.ascii.set('\r'); return s;
      case 'f': s.ascii.set('\f'); return s;
      case 'v': s.ascii.set('\v'); return s;
      case 'x': add_code_point(hex(2), &s); return s;
      case 'u': add_code_point(hex(4), &s); return s;
      case 'b':
        if (in_class) {
          s.ascii.set('\b');
          return s;
        }
        fail("'\\b' (word boundary) is not supported");
      default: break;
    }
    if (std::isdigit(static_cast<unsigned char>(k))) fail("backreferences are not supported");
    if (std::isalnum(static_cast<unsigned char>(k))) fail(std::string("unsupported escape '\\") + k + "'");
    --i_;
    add_code_point(read_code_point(), &s);
    return s;
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      if (at_end() || !std::isxdigit(static_cast<unsigned char>(peek()))) fail("bad hex escape");
      const char c = static_cast<char>(std::tolower(peek()));
      v = v * 16 + static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'a' + 10);
      ++i_;
    }
    if (v >= 0xD800 && v <= 0xDFFF) fail("surrogate code points are not supported");
    return v;
  }

  CharSet parse_class() {
    ++i_;
    bool negate = false;
    if (!at_end() && peek() == '^') {
      negate = true;
      ++i_;
    }
    CharSet s;
    bool first = true;
    while (true) {
      if (at_end()) fail("unterminated '['");
      if (peek() == ']' && !first) break;
      first = false;
      CharSet item;
      uint32_t lo_cp = 0;
      bool single = false;
      if (peek() == '\\') {
        item = parse_escape(/*in_class=*/true);
        single = item.ascii.count() + item.code_points.size() == 1 && !item.all_non_ascii;
        if (single) lo_cp = item.code_points.empty() ? static_cast<uint32_t>(item.ascii._Find_first()) : 0x80;
        if (single && !item.code_points.empty()) lo_cp = decode(item.code_points[0]);
      } else {
        lo_cp = read_code_point();
        single = true;
      }
      if (single && i_ + 1 < p_.size() && peek() == '-' && p_[i_ + 1] != ']') {
        ++i_;
        uint32_t hi_cp;
        if (peek() == '\\') {
          CharSet h = parse_escape(true);
          if (h.ascii.count() + h.code_points.size() != 1 || h.all_non_ascii) fail("bad class range");
          hi_cp = h.code_points.empty() ? static_cast<uint32_t>(h.ascii._Find_first()) : decode(h.code_points[0]);
        } else {
          hi_cp = read_code_point();
        }
        if (hi_cp < lo_cp) fail("inverted class range");
        if (hi_cp >= 0x80) fail("ranges over non-ASCII characters are not supported");
        for (uint32_t c = lo_cp; c <= hi_cp; ++c) s.ascii.set(c);
        continue;
      }
      if (single && item.ascii.none() && item.code_points.empty()) add_code_point(lo_cp, &item);
      s.ascii |= item.ascii;
      s.all_non_ascii = s.all_non_ascii || item.all_non_ascii;
      for (auto& cp : item.code_points) s.code_points.push_back(cp);
    }
    ++i_;
    if (negate) {
      if (!s.code_points.empty()) fail("non-ASCII characters in a negated class are not supported");
      s.ascii.flip();
      s.all_non_ascii = !s.all_non_ascii;
    }
    return s;
  }

  static uint32_t decode(const std::string& u) {
    const unsigned char b = static_cast<unsigned char>(u[0]);
    uint32_t cp = u.size() == 2 ? (b & 0x1F) : u.size() == 3 ? (b & 0x0F) : (b & 0x07);
    for (size_t k = 1; k < u.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(u[k]) & 0x3F);
    return cp;
  }

  NodePtr to_node(const CharSet& s) const {
    std::vector<NodePtr> alts;
    std::bitset<256> bytes;
    for (int c = 0; c < 128; ++c) {
      if (!s.ascii.test(c)) continue;
      if (!o_.json_string_content) {
        bytes.set(c);
        continue;
      }
      // The JSON text of character c inside a string.
      switch (c) {
        case '"': alts.push_back(literal("\\\"")); break;
        case '\\': alts.push_back(literal("\\\\")); break;
        case '\n': alts.push_back(literal("\\n")); break;
        case '\r': alts.push_back(literal("\\r")); break;
        case '\t': alts.push_back(literal("\\t")); break;
        case '\b': alts.push_back(literal("\\b")); break;
        case '\f': alts.push_back(literal("\\f")); break;
        default:
          if (c >= 0x20 && c != 0x7F) bytes.set(c);
          if (c == 0x7F) bytes.set(c);
      }
    }
    if (bytes.any() || (alts.empty() && !s.all_non_ascii && s.code_points.empty())) alts.push_back(byte_set(bytes));
    if (s.all_non_ascii) alts.push_back(non_ascii_char());
    for (const std::string& cp : s.code_points) alts.push_back(literal(cp));
    return alt(std::move(alts));
  }

  static constexpr int kMaxNesting = 64;  // bounds the parser's (and later the NFA builder's) recursion
  std::string_view p_;
  const RegexOptions& o_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

NodePtr parse_regex(std::string_view pattern, const RegexOptions& options) { return Parser(pattern, options).parse(); }

}  // namespace tandem::structured
