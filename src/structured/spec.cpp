// Constraint specs -> grammar trees, and the frontend's cheap validation (see spec.h).
#include "structured/spec.h"

#include "structured/regex.h"

namespace tandem::structured {
namespace {

using json = nlohmann::ordered_json;

constexpr int64_t kMaxValidatedNfaStates = 400000;

}  // namespace

namespace {

NodePtr spec_grammar_at(const json& spec, const JsonGrammarOptions& options, int depth);

}  // namespace

NodePtr spec_grammar(const json& spec, const JsonGrammarOptions& options) { return spec_grammar_at(spec, options, 0); }

namespace {

NodePtr spec_grammar_at(const json& spec, const JsonGrammarOptions& options, int depth) {
  if (depth > 16) throw GrammarError("constraints nested deeper than 16");
  if (!spec.is_object() || spec.size() == 0) throw GrammarError("a constraint must be an object");
  if (spec.contains("json_schema")) return json_schema_grammar(spec["json_schema"], options);
  if (spec.contains("json_object")) return json_object_grammar(options);
  if (spec.contains("regex")) {
    if (!spec["regex"].is_string()) throw GrammarError("the regex must be a string");
    return parse_regex(spec["regex"].get<std::string>());
  }
  if (spec.contains("literal")) {
    if (!spec["literal"].is_string()) throw GrammarError("a literal must be a string");
    return literal(spec["literal"].get<std::string>());
  }
  if (spec.contains("choice")) {
    const json& c = spec["choice"];
    if (!c.is_array() || c.empty()) throw GrammarError("the choices must be a non-empty array of strings");
    std::vector<NodePtr> alts;
    for (const json& s : c) {
      if (!s.is_string()) throw GrammarError("the choices must be strings");
      alts.push_back(literal(s.get<std::string>()));
    }
    return alt(std::move(alts));
  }
  for (const char* key : {"sequence", "any_of"}) {
    if (!spec.contains(key)) continue;
    const json& parts = spec[key];
    if (!parts.is_array() || parts.empty()) throw GrammarError(std::string("'") + key + "' must be a non-empty array");
    std::vector<NodePtr> kids;
    for (const json& p : parts) kids.push_back(spec_grammar_at(p, options, depth + 1));
    return std::string(key) == "sequence" ? seq(std::move(kids)) : alt(std::move(kids));
  }
  if (spec.contains("repeat")) {
    if (!spec.value("min", json(0)).is_number_integer() || !spec.value("max", json(-1)).is_number_integer()) {
      throw GrammarError("a repeat's min and max must be integers");
    }
    const int min = spec.value("min", 0), max = spec.value("max", -1);
    return repeat(spec_grammar_at(spec["repeat"], options, depth + 1), min, max);
  }
  throw GrammarError("unknown constraint kind '" + spec.begin().key() + "'");
}

}  // namespace

Status validate_spec(const std::string& spec_text) {
  try {
    const json spec = json::parse(spec_text);
    const NodePtr root = spec_grammar(spec);
    if (count_nfa_states(root, kMaxValidatedNfaStates) > kMaxValidatedNfaStates) {
      return Status::InvalidArgument("the schema is too large to enforce (more than " +
                                     std::to_string(kMaxValidatedNfaStates) + " automaton states)");
    }
    return Status::Ok();
  } catch (const GrammarError& e) {
    return Status::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("malformed constraint: ") + e.what());
  }
}

json json_schema_spec(const json& schema) { return json{{"json_schema", schema}}; }

json schemas_spec(const std::vector<json>& schemas, const std::string& prefix, const std::string& suffix) {
  json body;
  if (schemas.size() == 1) {
    body = json_schema_spec(schemas[0]);
  } else {
    json alts = json::array();
    for (const json& s : schemas) alts.push_back(json_schema_spec(s));
    body = json{{"any_of", alts}};
  }
  if (prefix.empty() && suffix.empty()) return body;
  json parts = json::array();
  if (!prefix.empty()) parts.push_back(json{{"literal", prefix}});
  parts.push_back(body);
  if (!suffix.empty()) parts.push_back(json{{"literal", suffix}});
  return json{{"sequence", parts}};
}

json tool_calls_spec(const json& call_schema, const std::string& prefix, const std::string& suffix, const std::string& separator,
                     int min_calls, int max_calls) {
  auto call = [&](const std::string& before) {
    json parts = json::array();
    if (!before.empty()) parts.push_back(json{{"literal", before}});
    parts.push_back(json_schema_spec(call_schema));
    if (!suffix.empty()) parts.push_back(json{{"literal", suffix}});
    return json{{"sequence", parts}};
  };
  const json first = call(prefix);
  if (max_calls == 1) return first;
  const json more = json{{"repeat", call(separator + prefix)}, {"min", min_calls - 1}, {"max", max_calls < 0 ? -1 : max_calls - 1}};
  return json{{"sequence", json::array({first, more})}};
}

}  // namespace tandem::structured
