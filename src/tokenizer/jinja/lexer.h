// The lexing half of the Jinja2 front end, following jinja2/lexer.py (3.1) for the default delimiters:
// a template split into text, {{ }} and {% %} segments with Jinja2's whitespace control applied
// (trim_blocks and lstrip_blocks on, as Hugging Face renders chat templates), and one tag's tokens.
// parser.cpp builds the tree from them. Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

namespace tandem::tokenizer::jinja {

struct Segment {
  enum class Type { kText, kVariable, kBlock };
  Type type;
  std::string content;
  int line;
};

// Stage 1: the whole template as segments; comments dropped, raw blocks as text.
std::vector<Segment> segment(const std::string& input);

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp, kEnd };
  Type type;
  std::string text;  // name, operator, or the decoded string
  int line;
};

// Stage 2: the tokens of one {{ }} or {% %} segment's content, ending with a kEnd token.
std::vector<Token> tokenize(const std::string& s, int line);

}  // namespace tandem::tokenizer::jinja
