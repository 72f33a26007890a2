// Evaluates a parsed template with Jinja2's semantics over Python-like values: scoping (a for
// loop's body gets a fresh scope each iteration; if does not scope; macros see their arguments and
// the globals), Undefined (prints as "", is falsy and iterates empty, but attribute access, calls
// and arithmetic on it fail), and the filters, tests and str/dict methods of the subset.
// Thread-safety: one render per Interpreter; create one per render.
#pragma once

#include <string>
#include <unordered_map>

#include "tokenizer/jinja/ast.h"

namespace tandem::tokenizer::jinja {

// Renders `body` with `globals` as the outermost scope. Throws TemplateError (with the line) for a
// failure Jinja2 would raise or a construct outside the subset; RaisedError for raise_exception().
std::string render(const Body& body, std::unordered_map<std::string, Value> globals);

// What the template's raise_exception(message) throws.
class RaisedError : public TemplateError {
 public:
  RaisedError(const std::string& message, int line) : TemplateError(message, line) {}
};

}  // namespace tandem::tokenizer::jinja
