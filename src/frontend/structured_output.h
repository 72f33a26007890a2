// Structured output in the OpenAI API: `response_format` ({"type": "json_object"} and {"type":
// "json_schema", "json_schema": {"schema": ...}}) and vLLM's `guided_json`, `guided_regex` and
// `guided_choice`, turned into the constraint spec (src/structured/spec.h) the worker's engine enforces.
// The spec is checked here (unsupported schema keywords, bad regexes, sizes) so that a bad one is a 400
// naming the parameter before any worker sees it.
// Thread-safety: a pure function.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "frontend/openai.h"

namespace tandem::frontend {

// Reads the structured-output parameters of `body` (parsed from `text`; the schema is read again from
// `text` so that its properties keep their order) into `sampling->guided` (left empty without any).
// A 400 naming the parameter for a malformed or unsupported one, or for more than one given.
std::optional<ApiError> parse_structured_output(const std::string& text, const nlohmann::json& body,
                                                rpc::pb::SamplingParams* sampling);

}  // namespace tandem::frontend
