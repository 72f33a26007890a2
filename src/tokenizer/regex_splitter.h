// Splits text into pre-tokens with a Unicode regex, keeping every match and every gap between
// matches as its own piece (Hugging Face's Split pre-tokenizer with behavior "Isolated").
// The pattern is compiled with PCRE2 (UTF + UCP, JIT). Hugging Face runs these patterns with
// Oniguruma, whose Unicode \s is {\t \n \v \f \r, U+0085, Zs, Zl, Zp}; PCRE2's also holds U+180E,
// so \s and \S are rewritten into that explicit class to agree with Oniguruma on every code point.
// Ownership: owns the compiled pattern. Thread-safety: split() may run on many threads at once.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

class RegexSplitter {
 public:
  // Throws tandem::Error naming the pattern when PCRE2 rejects it.
  explicit RegexSplitter(const std::string& pattern);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Appends the pieces of `text` to *pieces (views into `text`). REQUIRES: `text` is valid UTF-8.
  void split(std::string_view text, std::vector<std::string_view>* pieces) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The pattern with \s and \S replaced by Oniguruma's Unicode whitespace class (exposed for tests).
std::string rewrite_whitespace_classes(const std::string& pattern);

}  // namespace tandem::tokenizer
