// JSON Schema -> automaton.h tree: the texts the tree accepts are JSON documents that validate against
// the schema (a subset of them: properties come in the schema's order, only declared properties are
// written, whitespace is bounded, numbers have bounded digits).
//
// Supported: type (a name or a list), properties, required, additionalProperties (false, true, or a
// schema for an object without properties), items, minItems, maxItems, enum, const, anyOf, allOf with
// one member, $ref to "#", "#/$defs/..." or "#/definitions/..." (not recursive), string minLength /
// maxLength / pattern (regex.h), integer minimum / maximum / exclusiveMinimum / exclusiveMaximum, number
// minimum 0 / exclusiveMinimum 0 (non-negative), and the annotations title, description, default,
// examples, $schema, $id, $comment, $defs, definitions, deprecated, readOnly, writeOnly. Anything else
// is refused with a GrammarError naming the keyword (e.g. "unsupported JSON schema keyword 'format'").
//
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include "structured/automaton.h"

namespace tandem::structured {

struct JsonGrammarOptions {
  // Whitespace characters allowed at each place JSON allows whitespace: bounded, so that a model that
  // prefers spaces cannot loop without end.
  int max_whitespace = 8;
  // Nesting depth of values whose shape the schema leaves open ({"type": "object"} with no properties,
  // an array without items, {} and json_object).
  int max_open_depth = 4;
};

// Throws GrammarError naming the unsupported keyword or bad value.
NodePtr json_schema_grammar(const nlohmann::ordered_json& schema, const JsonGrammarOptions& options = {});
// Any JSON object (response_format json_object), nested at most options.max_open_depth deep.
NodePtr json_object_grammar(const JsonGrammarOptions& options = {});

}  // namespace tandem::structured
