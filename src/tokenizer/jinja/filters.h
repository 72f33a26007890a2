// Jinja2's filters and tests, by name, for the parser (which names exist) and the interpreter (apply
// them). The tables in filters.cpp are the single list of supported filters and tests.
// Thread-safety: pure functions over immutable tables.
#pragma once

#include <string>

#include "tokenizer/jinja/value.h"

namespace tandem::tokenizer::jinja {

// Whether a template may use the filter `name` (the parser rejects any other).
bool is_filter(const std::string& name);

// v | name(args...). TemplateError (at args.line) for an unknown filter or bad arguments.
Value apply_filter(const std::string& name, const Value& v, CallArgs& args);

// Whether a template may use the test `name` (the parser rejects any other).
bool is_test(const std::string& name);

// v is name(args...). TemplateError (at args.line) for an unknown test or bad arguments.
bool apply_test(const std::string& name, const Value& v, CallArgs& args);

}  // namespace tandem::tokenizer::jinja
