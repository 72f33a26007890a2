// Tool calling on the request side of /v1/chat/completions: the `tools`, `tool_choice` and
// `parallel_tool_calls` parameters, the tool fields of the conversation's messages (an assistant's
// `tool_calls`, a tool message's `tool_call_id`) in the shape chat templates take them (vLLM's: an
// assistant's call arguments as JSON objects, not strings), and what a reply must look like when
// tool_choice forces calls (`required` or a named function): the constraint the constrained decoder
// enforces.
//
// Everything here keeps the client's key order (ordered_json): a template renders the tools' JSON
// schemas and the calls' arguments with tojson, and the prompt must be the one vLLM renders.
// Thread-safety: free functions over values.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "frontend/tool_call_parser.h"

namespace tandem::frontend {

// A bad request: the message and the parameter it names (openai.cpp makes the 400 of it).
struct ToolError {
  std::string message;
  std::string param;
};

struct ToolChoice {
  enum class Kind { kNone, kAuto, kRequired, kNamed };
  Kind kind = Kind::kNone;
  std::string name;  // kNamed: the function
};

struct ToolRequest {
  nlohmann::ordered_json tools = nullptr;  // the request's tools as sent (a non-empty array), or null
  ToolChoice choice;                       // absent: auto with tools, none without (OpenAI's defaults)
  bool parallel_tool_calls = true;

  // The reply is to be read for tool calls: tools were given and tool_choice is not "none".
  bool active() const { return !tools.is_null() && choice.kind != ToolChoice::Kind::kNone; }
  // The tools the chat template sees: none when tool_choice is "none" (the model is not to call them).
  nlohmann::ordered_json template_tools() const { return active() ? tools : nlohmann::ordered_json(nullptr); }
};

// Reads `tools`, `tool_choice` and `parallel_tool_calls` of a chat request's `body`. Errors name the
// parameter: a malformed tool (`tools[1].function.name`), an unknown tool_choice, a named function
// that is not among the tools (the message names it), `required` without tools.
std::optional<ToolError> parse_tool_request(const nlohmann::ordered_json& body, ToolRequest* out);

// Copies the tool fields of `message` (the request's messages[i], `where` its name in errors) into
// `out` (the message as the template sees it): an assistant's `tool_calls`, each with its `arguments`
// string parsed to JSON; a tool message's `tool_call_id`; any message's `name`. Malformed calls and
// arguments that are not JSON are errors naming the field.
std::optional<ToolError> read_message_tool_fields(const nlohmann::ordered_json& message, const std::string& where,
                                                  nlohmann::ordered_json* out);

// What a reply must be when tool_choice forces calls, in the text form `parser` reads back: each call
// is `call_prefix` + one JSON value valid against `call_schema` + `call_suffix`; between min_calls and
// max_calls calls (max_calls -1: no limit), joined by `separator`; nothing before or after them.
// `grammar` says the same in EBNF for a reader; `array_schema` is the calls as one JSON array (vLLM's
// form for "required"), for an engine that can only hold a reply to a single schema.
struct ToolCallConstraint {
  nlohmann::ordered_json call_schema;
  std::string call_prefix;
  std::string call_suffix;
  std::string separator;
  int min_calls = 1;
  int max_calls = 1;
  nlohmann::ordered_json array_schema;
  std::string grammar;
};

// The constraint for `request` read by `parser`: nullopt when nothing is forced (tool_choice none or
// auto, or no tools). `required`: one or more calls of any of the tools (one when
// parallel_tool_calls is false); a named function: exactly one call of it. A tool without
// `parameters` takes an empty object.
std::optional<ToolCallConstraint> tool_call_constraint(const ToolRequest& request, ToolParserKind parser);

}  // namespace tandem::frontend
