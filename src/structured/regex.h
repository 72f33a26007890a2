// Regular expressions (the common subset of ECMAScript and Python syntax) -> automaton.h trees, for
// guided_regex and JSON-schema string patterns. Supported: literals (UTF-8 included), `.`, classes
// `[...]`/`[^...]` with ranges, `\d \w \s \D \W \S`, escapes (`\n \t \r \f \v \xHH \uHHHH` and
// escaped punctuation), groups `(...)`, `(?:...)`, `(?P<n>...)`/`(?<n>...)`, alternation, `* + ?
// {n} {n,} {n,m}` (a trailing lazy `?` is accepted and means nothing for a full match), and `^`/`$` at
// the ends. Refused (GrammarError naming it): backreferences, lookaround, possessive quantifiers,
// `\b`, flags, non-ASCII ranges and non-ASCII members of negated classes.
//
// The expression always matches the whole text (a leading ^ and trailing $ are allowed and change
// nothing). Thread-safety: a pure function.
#pragma once

#include <string_view>

#include "structured/automaton.h"

namespace tandem::structured {

struct RegexOptions {
  // The match is the content of a JSON string: `"` and `\` are written as the escapes \" and \\,
  // \n \r \t \b \f as theirs, and other control characters are left out (the outputs are then a subset
  // of the pattern's language, which still satisfies the schema).
  bool json_string_content = false;
  int max_repeat = 1000;  // the largest {n,m} bound taken
};

// Throws GrammarError with the position and the construct on bad or unsupported syntax.
NodePtr parse_regex(std::string_view pattern, const RegexOptions& options = {});

}  // namespace tandem::structured
