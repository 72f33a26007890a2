// Stages 1 and 2 of the Jinja2 front end (see lexer.h): segments with whitespace control, then tokens.
#include "tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cctype>

#include "tokenizer/jinja/value.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer::jinja {

// ---- Stage 1: the template split into text, {{ }} and {% %} with whitespace control applied ----

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace tandem::tokenizer::jinja
