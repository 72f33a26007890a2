// A request's output constraint as it travels from the frontend to the engine: a small JSON text (the
// `guided` field of the request plane's SamplingParams) naming one grammar:
//   {"json_schema": SCHEMA}          a JSON document valid against SCHEMA (json_schema.h)
//   {"json_object": true}            any JSON object
//   {"regex": "PATTERN"}             text matching PATTERN whole (regex.h)
//   {"choice": ["a", "b", ...]}      exactly one of the strings
//   {"literal": "TEXT"}              exactly TEXT
//   {"sequence": [SPEC, ...]}        the specs' texts one after another
//   {"any_of": [SPEC, ...]}          any one of the specs
//   {"repeat": SPEC, "min": m, "max": M}   SPEC m..M times (M -1 or absent: unbounded)
// sequence/any_of/repeat/literal let another feature (tool calls: `<tool_call>` + a schema + `</tool_call>`)
// describe a structured reply without a grammar of its own.
//
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/status.h"
#include "structured/automaton.h"
#include "structured/json_schema.h"

namespace tandem::structured {

// The grammar tree of a spec. Throws GrammarError naming what is unsupported or malformed.
NodePtr spec_grammar(const nlohmann::ordered_json& spec, const JsonGrammarOptions& options = {});

// Checks a spec without building its DFA (cheap enough for the frontend's I/O thread): parses it, builds
// its tree and bounds its automaton's size. InvalidArgument with the GrammarError's message.
Status validate_spec(const std::string& spec_text);

// Spec builders (the seam for features that constrain the reply, e.g. tool calling):
nlohmann::ordered_json json_schema_spec(const nlohmann::ordered_json& schema);
// Any one of `schemas` (one schema: that schema), between `prefix` and `suffix` (either may be empty).
nlohmann::ordered_json schemas_spec(const std::vector<nlohmann::ordered_json>& schemas, const std::string& prefix = "",
                                    const std::string& suffix = "");
// Forced tool calls: min_calls..max_calls (max -1: unbounded) calls, each `prefix` + a JSON value valid
// against `call_schema` + `suffix`, joined by `separator`, nothing around them (the shape of the
// frontend's ToolCallConstraint). REQUIRES: 1 <= min_calls, max_calls == -1 or >= min_calls.
nlohmann::ordered_json tool_calls_spec(const nlohmann::ordered_json& call_schema, const std::string& prefix,
                                       const std::string& suffix, const std::string& separator, int min_calls, int max_calls);

}  // namespace tandem::structured
