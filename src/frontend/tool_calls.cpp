// Tool calling's request side and the forced-call constraint (see tool_calls.h).
#include "frontend/tool_calls.h"

namespace tandem::frontend {
namespace {

using ojson = nlohmann::ordered_json;

const ojson* field(const ojson& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

// Each tool: {"type": "function", "function": {"name": non-empty string, "description"?: string,
// "parameters"?: object}}.
std::optional<ToolError> check_tool(const ojson& tool, const std::string& where) {
  if (!tool.is_object()) return ToolError{"'" + where + "' must be an object", where};
  if (const ojson* type = field(tool, "type"); type && *type != "function") {
    return ToolError{"'" + where + ".type' must be \"function\"", where + ".type"};
  }
  const ojson* fn = field(tool, "function");
  if (!fn || !fn->is_object()) return ToolError{"'" + where + ".function' must be an object", where + ".function"};
  const ojson* name = field(*fn, "name");
  if (!name || !name->is_string() || name->get<std::string>().empty()) {
    return ToolError{"'" + where + ".function.name' must be a non-empty string", where + ".function.name"};
  }
  if (const ojson* d = field(*fn, "description"); d && !d->is_string()) {
    return ToolError{"'" + where + ".function.description' must be a string", where + ".function.description"};
  }
  if (const ojson* p = field(*fn, "parameters"); p && !p->is_object()) {
    return ToolError{"'" + where + ".function.parameters' must be an object (a JSON schema)", where + ".function.parameters"};
  }
  return std::nullopt;
}

std::string tool_name(const ojson& tool) { return tool["function"]["name"].get<std::string>(); }

ojson tool_parameters(const ojson& tool) {
  const ojson* p = field(tool["function"], "parameters");
  return p ? *p : ojson{{"type", "object"}, {"properties", ojson::object()}};
}

}  // namespace

std::optional<ToolError> parse_tool_request(const ojson& body, ToolRequest* out) {
  if (const ojson* tools = field(body, "tools")) {
    if (!tools->is_array()) return ToolError{"'tools' must be a list", "tools"};
    for (size_t i = 0; i < tools->size(); ++i) {
      if (auto error = check_tool((*tools)[i], "tools[" + std::to_string(i) + "]")) return error;
    }
    if (!tools->empty()) out->tools = *tools;
  }
  out->choice.kind = out->tools.is_null() ? ToolChoice::Kind::kNone : ToolChoice::Kind::kAuto;
  if (const ojson* choice = field(body, "tool_choice")) {
    if (choice->is_string()) {
      const std::string s = choice->get<std::string>();
      if (s == "none") {
        out->choice.kind = ToolChoice::Kind::kNone;
      } else if (s == "auto") {
        // Without tools there is nothing to call: the same as none (OpenAI answers it alike).
        if (!out->tools.is_null()) out->choice.kind = ToolChoice::Kind::kAuto;
      } else if (s == "required") {
        out->choice.kind = ToolChoice::Kind::kRequired;
      } else {
        return ToolError{"'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                         "\"function\": {\"name\": ...}}, got \"" + s + "\"",
                         "tool_choice"};
      }
    } else if (choice->is_object()) {
      const ojson* fn = field(*choice, "function");
      const ojson* name = fn && fn->is_object() ? field(*fn, "name") : nullptr;
      if ((field(*choice, "type") && (*choice)["type"] != "function") || !name || !name->is_string()) {
        return ToolError{"'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                         "tool_choice"};
      }
      out->choice.kind = ToolChoice::Kind::kNamed;
      out->choice.name = name->get<std::string>();
    } else {
      return ToolError{"'tool_choice' must be a string or an object", "tool_choice"};
    }
  }
  const bool forced = out->choice.kind == ToolChoice::Kind::kRequired || out->choice.kind == ToolChoice::Kind::kNamed;
  if (forced && out->tools.is_null()) {
    return ToolError{"'tool_choice' " +
                         (out->choice.kind == ToolChoice::Kind::kNamed ? "naming function '" + out->choice.name + "'"
                                                                       : std::string("\"required\"")) +
                         " needs 'tools'",
                     "tool_choice"};
  }
  if (out->choice.kind == ToolChoice::Kind::kNamed) {
    bool found = false;
    for (const auto& tool : out->tools) found = found || tool_name(tool) == out->choice.name;
    if (!found) {
      return ToolError{"'tool_choice' names function '" + out->choice.name + "', which is not among 'tools'",
                       "tool_choice"};
    }
  }
  if (const ojson* parallel = field(body, "parallel_tool_calls")) {
    if (!parallel->is_boolean()) return ToolError{"'parallel_tool_calls' must be a boolean", "parallel_tool_calls"};
    out->parallel_tool_calls = parallel->get<bool>();
  }
  return std::nullopt;
}

std::optional<ToolError> read_message_tool_fields(const ojson& message, const std::string& where, ojson* out) {
  if (const ojson* name = field(message, "name"); name && name->is_string()) (*out)["name"] = *name;
  const ojson* role_field = field(message, "role");
  const std::string role = role_field && role_field->is_string() ? role_field->get<std::string>() : "";
  if (role == "tool") {
    if (const ojson* id = field(message, "tool_call_id")) {
      if (!id->is_string()) return ToolError{"'" + where + ".tool_call_id' must be a string", where + ".tool_call_id"};
      (*out)["tool_call_id"] = *id;
    }
    return std::nullopt;
  }
  const ojson* calls = field(message, "tool_calls");
  if (role != "assistant" || !calls) return std::nullopt;
  if (!calls->is_array()) return ToolError{"'" + where + ".tool_calls' must be a list", where + ".tool_calls"};
  ojson converted = ojson::array();
  for (size_t i = 0; i < calls->size(); ++i) {
    const ojson& call = (*calls)[i];
    const std::string at = where + ".tool_calls[" + std::to_string(i) + "]";
    const ojson* fn = call.is_object() ? field(call, "function") : nullptr;
    if (!fn || !fn->is_object()) return ToolError{"'" + at + ".function' must be an object", at + ".function"};
    const ojson* name = field(*fn, "name");
    if (!name || !name->is_string()) return ToolError{"'" + at + ".function.name' must be a string", at + ".function.name"};
    if (const ojson* id = field(call, "id"); id && !id->is_string()) {
      return ToolError{"'" + at + ".id' must be a string", at + ".id"};
    }
    ojson copy = call;
    // The API sends arguments as a JSON string; templates take them as an object (vLLM parses them
    // the same way before rendering). An object sent as such is kept.
    if (const ojson* args = field(*fn, "arguments"); args && args->is_string()) {
      ojson parsed = ojson::parse(args->get<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (parsed.is_discarded()) {
        return ToolError{"'" + at + ".function.arguments' is not valid JSON", at + ".function.arguments"};
      }
      copy["function"]["arguments"] = std::move(parsed);
    }
    converted.push_back(std::move(copy));
  }
  (*out)["tool_calls"] = std::move(converted);
  return std::nullopt;
}

std::optional<ToolCallConstraint> tool_call_constraint(const ToolRequest& request, ToolParserKind parser) {
  const auto kind = request.choice.kind;
  if (request.tools.is_null() || (kind != ToolChoice::Kind::kRequired && kind != ToolChoice::Kind::kNamed)) {
    return std::nullopt;
  }
  // hermes calls spell their arguments "arguments", Llama 3.1's "parameters".
  const char* args_key = parser == ToolParserKind::kLlama3Json ? "parameters" : "arguments";
  ojson alternatives = ojson::array();
  for (const auto& tool : request.tools) {
    const std::string name = tool_name(tool);
    if (kind == ToolChoice::Kind::kNamed && name != request.choice.name) continue;
    alternatives.push_back({{"type", "object"},
                            {"properties", {{"name", {{"type", "string"}, {"const", name}}}, {args_key, tool_parameters(tool)}}},
                            {"required", {"name", args_key}},
                            {"additionalProperties", false}});
  }
  ToolCallConstraint c;
  c.call_schema = alternatives.size() == 1 ? alternatives[0] : ojson{{"anyOf", alternatives}};
  if (parser == ToolParserKind::kLlama3Json) {
    c.separator = "; ";
  } else {
    c.call_prefix = "<tool_call>\n";
    c.call_suffix = "\n</tool_call>";
    c.separator = "\n";
  }
  c.min_calls = 1;
  c.max_calls = kind == ToolChoice::Kind::kNamed || !request.parallel_tool_calls ? 1 : -1;
  c.array_schema = {{"type", "array"}, {"items", c.call_schema}, {"minItems", 1}};
  if (c.max_calls > 0) c.array_schema["maxItems"] = c.max_calls;
  auto quote = [](const std::string& s) { return ojson(s).dump(); };
  const std::string call = (c.call_prefix.empty() ? "" : quote(c.call_prefix) + " ") + "CALL_JSON" +
                           (c.call_suffix.empty() ? "" : " " + quote(c.call_suffix));
  c.grammar = "reply ::= call" + (c.max_calls == 1 ? std::string() : " (" + quote(c.separator) + " call)*") +
              "\ncall ::= " + call + "\n(CALL_JSON: a JSON value valid against call_schema)";
  return c;
}

}  // namespace tandem::frontend
