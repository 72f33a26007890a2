// Jinja2 template source -> syntax tree, with Jinja2's lexing rules for the settings Hugging Face
// renders chat templates with: trim_blocks and lstrip_blocks on, keep_trailing_newline off,
// {%- -%} / {{- -}} / {#- -#} whitespace control, {%+ to keep a line's indentation, raw blocks.
// A construct outside the supported subset is a TemplateError naming it and its line.
// Thread-safety: pure function.
#pragma once

#include <string>

#include "tokenizer/jinja/ast.h"

namespace tandem::tokenizer::jinja {

Body parse_template(const std::string& source);

}  // namespace tandem::tokenizer::jinja
