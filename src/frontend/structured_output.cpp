// response_format / guided_* -> a constraint spec, validated (see structured_output.h).
#include "frontend/structured_output.h"

#include "structured/spec.h"

namespace tandem::frontend {
namespace {

using ordered = nlohmann::ordered_json;

bool present(const nlohmann::json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

}  // namespace

std::optional<ApiError> parse_structured_output(const std::string& text, const nlohmann::json& body,
                                                rpc::pb::SamplingParams* sampling) {
  std::vector<std::string> given;
  for (const char* key : {"response_format", "guided_json", "guided_regex", "guided_choice"}) {
    if (present(body, key)) given.push_back(key);
  }
  if (present(body, "response_format") && body["response_format"].is_object() &&
      body["response_format"].value("type", "") == "text") {
    given.erase(given.begin());
  }
  if (given.empty()) return std::nullopt;
  if (given.size() > 1) {
    return ApiError::bad_request("only one of 'response_format', 'guided_json', 'guided_regex' and 'guided_choice' may be given",
                                 given[1]);
  }
  const std::string param = given[0];
  // The body again, in key order: a schema's properties are written in the order the client gave them.
  const ordered v = ordered::parse(text, nullptr, /*allow_exceptions=*/false)[param];
  ordered spec;
  auto bad = [&](const std::string& message) { return ApiError::bad_request(message, param); };
  if (param == "response_format") {
    if (!v.is_object() || !v.contains("type") || !v["type"].is_string()) {
      return bad("'response_format' must be an object with a 'type' (\"text\", \"json_object\" or \"json_schema\")");
    }
    const std::string type = v["type"].get<std::string>();
    if (type == "json_object") {
      spec = ordered{{"json_object", true}};
    } else if (type == "json_schema") {
      if (!v.contains("json_schema") || !v["json_schema"].is_object()) {
        return bad("'response_format' of type \"json_schema\" needs a 'json_schema' object");
      }
      const ordered& js = v["json_schema"];
      if (!js.contains("schema") || !(js["schema"].is_object() || js["schema"].is_boolean())) {
        return bad("'response_format.json_schema' needs a 'schema' (a JSON schema object)");
      }
      spec = structured::json_schema_spec(js["schema"]);
    } else {
      return bad("'response_format' type '" + type + "' is not supported (use \"text\", \"json_object\" or \"json_schema\")");
    }
  } else if (param == "guided_json") {
    ordered schema = v;
    if (v.is_string()) {  // vLLM takes the schema as a JSON string too
      schema = ordered::parse(v.get<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (schema.is_discarded()) return bad("'guided_json' is a string that is not JSON");
    }
    if (!schema.is_object() && !schema.is_boolean()) return bad("'guided_json' must be a JSON schema object");
    spec = structured::json_schema_spec(schema);
  } else if (param == "guided_regex") {
    if (!v.is_string()) return bad("'guided_regex' must be a string");
    spec = ordered{{"regex", v}};
  } else {
    if (!v.is_array() || v.empty()) return bad("'guided_choice' must be a non-empty array of strings");
    for (const ordered& c : v) {
      if (!c.is_string()) return bad("'guided_choice' must be a non-empty array of strings");
    }
    spec = ordered{{"choice", v}};
  }
  const std::string spec_text = spec.dump();
  const Status valid = structured::validate_spec(spec_text);
  if (!valid.ok()) return bad("'" + param + "' cannot be enforced: " + valid.message());
  sampling->set_guided(spec_text);
  return std::nullopt;
}

}  // namespace tandem::frontend
