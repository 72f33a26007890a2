// Grammars as languages: which texts a regex, a choice list or a JSON schema's DFA accepts and rejects,
// and which schema features are refused with their name.
#include <gtest/gtest.h>

#include "structured/automaton.h"
#include "structured/json_schema.h"
#include "structured/regex.h"
#include "structured/spec.h"

namespace tandem::structured {
namespace {

using json = nlohmann::ordered_json;

Dfa schema_dfa(const char* schema) { return compile_dfa(json_schema_grammar(json::parse(schema))); }

std::string refusal(const char* schema) {
  try {
    compile_dfa(json_schema_grammar(json::parse(schema)));
  } catch (const GrammarError& e) {
    return e.what();
  }
  return "";
}

TEST(RegexGrammar, AcceptsAndRejects) {
  const Dfa d = compile_dfa(parse_regex("^[a-c]{2,3}(x|yz)*\\d+$"));
  EXPECT_TRUE(d.matches("ab1"));
  EXPECT_TRUE(d.matches("abcxyzx42"));
  EXPECT_FALSE(d.matches("a1"));
  EXPECT_FALSE(d.matches("abcd1"));
  EXPECT_FALSE(d.matches("ab"));
  EXPECT_FALSE(d.matches("abyx1"));
  const Dfa dot = compile_dfa(parse_regex("a.c"));
  EXPECT_TRUE(dot.matches("abc"));
  EXPECT_TRUE(dot.matches("a\xC3\xA9" "c"));  // one non-ASCII code point
  EXPECT_FALSE(dot.matches("a\nc"));
  EXPECT_FALSE(dot.matches("a\xC3" "c"));      // half a code point
  const Dfa neg = compile_dfa(parse_regex("[^0-9]+"));
  EXPECT_TRUE(neg.matches("ab\xE2\x82\xAC"));
  EXPECT_FALSE(neg.matches("a1"));
  const Dfa email = compile_dfa(parse_regex("[\\w.]+@[a-z]+\\.(com|org)"));
  EXPECT_TRUE(email.matches("john.doe@example.com"));
  EXPECT_FALSE(email.matches("john@example.net"));
}

TEST(RegexGrammar, RefusesUnsupportedSyntax) {
  for (const char* bad : {"(a)\\1", "a(?=b)", "a++", "\\bword", "[z-a]", "(ab", "*a", "a{3,1}", "a*?*?*?*"}) {
    EXPECT_THROW(parse_regex(bad), GrammarError) << bad;
  }
  // Nesting is bounded (the parser and the NFA builder recurse).
  EXPECT_THROW(parse_regex(std::string(100, '(') + "a" + std::string(100, ')')), GrammarError);
  EXPECT_NO_THROW(parse_regex(std::string(20, '(') + "a" + std::string(20, ')')));
}

TEST(JsonSchemaGrammar, ObjectWithRequiredAndOptionalProperties) {
  const Dfa d = schema_dfa(R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                               "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
                               "required": ["name"], "additionalProperties": false})");
  EXPECT_TRUE(d.matches(R"({"name": "Ann"})"));
  EXPECT_TRUE(d.matches(R"({"name":"Ann","age":31})"));
  EXPECT_TRUE(d.matches(R"({"name": "A\"n", "tags": ["x", "y"]})"));
  EXPECT_TRUE(d.matches("{\n  \"name\": \"Ann\",\n  \"age\": -4\n}"));
  EXPECT_FALSE(d.matches(R"({"age": 31})"));                      // name is required
  EXPECT_FALSE(d.matches(R"({"name": "Ann", "tags": ["x", "y", "z"]})"));  // maxItems
  EXPECT_FALSE(d.matches(R"({"name": "Ann", "age": 3.5})"));
  EXPECT_FALSE(d.matches(R"({"name": "Ann",})"));
  EXPECT_FALSE(d.matches(R"({"name": "Ann", "other": 1})"));
  EXPECT_FALSE(d.matches(R"({"name": "A)" "\n" R"("})"));        // raw control character in a string
  EXPECT_FALSE(d.matches("{" + std::string(9, ' ') + "\"name\": \"Ann\"}"));  // whitespace is bounded
}

TEST(JsonSchemaGrammar, ScalarsEnumsConstAnyOfRefs) {
  const Dfa e = schema_dfa(R"({"enum": ["red", "green", 3, null]})");
  EXPECT_TRUE(e.matches(R"("red")"));
  EXPECT_TRUE(e.matches("3"));
  EXPECT_TRUE(e.matches("null"));
  EXPECT_FALSE(e.matches(R"("blue")"));
  const Dfa c = schema_dfa(R"({"const": {"a": [1, true]}})");
  EXPECT_TRUE(c.matches(R"({"a":[1,true]})"));
  EXPECT_FALSE(c.matches(R"({"a":[1,false]})"));
  const Dfa any = schema_dfa(R"({"anyOf": [{"type": "boolean"}, {"type": "null"}, {"type": "number", "minimum": 0}]})");
  EXPECT_TRUE(any.matches("true"));
  EXPECT_TRUE(any.matches("null"));
  EXPECT_TRUE(any.matches("2.5e10"));
  EXPECT_FALSE(any.matches("-1"));
  const Dfa range = schema_dfa(R"({"type": "integer", "minimum": -5, "maximum": 120})");
  for (const char* ok : {"-5", "0", "7", "99", "120"}) EXPECT_TRUE(range.matches(ok)) << ok;
  for (const char* bad : {"-6", "121", "007", "-0", "1000"}) EXPECT_FALSE(range.matches(bad)) << bad;
  const Dfa ref = schema_dfa(R"({"$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
                                 "type": "array", "items": {"$ref": "#/$defs/P"}, "minItems": 1})");
  EXPECT_TRUE(ref.matches(R"([{"x": 1}, {"x": 2}])"));
  EXPECT_FALSE(ref.matches("[]"));
  const Dfa str = schema_dfa(R"({"type": "string", "minLength": 2, "maxLength": 3})");
  EXPECT_TRUE(str.matches(R"("ab")"));
  EXPECT_TRUE(str.matches(R"("\u00e9")") == false);  // \u escapes are never generated
  EXPECT_TRUE(str.matches("\"\xC3\xA9\xC3\xA9\""));  // two code points
  EXPECT_FALSE(str.matches(R"("a")"));
  EXPECT_FALSE(str.matches(R"("abcd")"));
  const Dfa pat = schema_dfa(R"({"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"})");
  EXPECT_TRUE(pat.matches(R"("AB-123")"));
  EXPECT_FALSE(pat.matches(R"("AB-12")"));
  const Dfa open = schema_dfa(R"({"type": "object"})");
  EXPECT_TRUE(open.matches(R"({"k": [1, {"z": null}], "s": "v"})"));
  EXPECT_FALSE(open.matches(R"([1])"));
  const Dfa obj = compile_dfa(json_object_grammar());
  EXPECT_TRUE(obj.matches(R"({})"));
  EXPECT_TRUE(obj.matches(R"({"a": {"b": {"c": [1, 2.5, "x"]}}})"));
  EXPECT_FALSE(obj.matches(R"({"a": {"b": {"c": {"d": {"e": 1}}}}})"));  // deeper than max_open_depth
}

TEST(JsonSchemaGrammar, RefusesUnsupportedFeaturesByName) {
  EXPECT_NE(refusal(R"({"type": "string", "format": "email"})").find("'format'"), std::string::npos);
  EXPECT_NE(refusal(R"({"oneOf": [{"type": "string"}]})").find("'oneOf'"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "array", "uniqueItems": true})").find("'uniqueItems'"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "patternProperties": {}})").find("'patternProperties'"), std::string::npos);
  EXPECT_NE(refusal(R"({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"})").find("recursive"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"type": "number", "maximum": 3})").find("'maximum'"), std::string::npos);
  EXPECT_NE(refusal(R"({"type": "object", "properties": {"a": {}}, "required": ["b"]})").find("'b'"), std::string::npos);
  std::string deep = R"({"type": "string"})";
  for (int i = 0; i < 40; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  EXPECT_NE(refusal(deep.c_str()).find("nests deeper"), std::string::npos);
}

TEST(Spec, KindsAndValidation) {
  const Dfa choice = compile_dfa(spec_grammar(json::parse(R"({"choice": ["yes", "no"]})")));
  EXPECT_TRUE(choice.matches("yes"));
  EXPECT_FALSE(choice.matches("maybe"));
  EXPECT_TRUE(compile_dfa(spec_grammar(json::parse(R"({"choice": ["", "x"]})"))).matches(""));  // found by fuzzing: an empty literal
  const json tool = schemas_spec({json::parse(R"({"type": "object", "properties": {"n": {"const": "f"}}, "required": ["n"]})"),
                                  json::parse(R"({"type": "object", "properties": {"n": {"const": "g"}}, "required": ["n"]})")},
                                 "<tool_call>\n", "\n</tool_call>");
  const Dfa calls = compile_dfa(spec_grammar(tool));
  EXPECT_TRUE(calls.matches("<tool_call>\n{\"n\": \"g\"}\n</tool_call>"));
  EXPECT_FALSE(calls.matches("<tool_call>\n{\"n\": \"h\"}\n</tool_call>"));
  // Forced tool calls in Qwen3's hermes form: one to three calls, newline-separated.
  const json calls_spec = tool_calls_spec(json::parse(R"({"type": "object", "properties": {"name": {"const": "f"},
      "arguments": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}, "required": ["name", "arguments"]})"),
                                          "<tool_call>\n", "\n</tool_call>", "\n", 1, 3);
  const Dfa forced = compile_dfa(spec_grammar(calls_spec));
  const std::string one = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>";
  EXPECT_TRUE(forced.matches(one));
  EXPECT_TRUE(forced.matches(one + "\n" + one + "\n" + one));
  EXPECT_FALSE(forced.matches(one + "\n" + one + "\n" + one + "\n" + one));
  EXPECT_FALSE(forced.matches(""));
  EXPECT_FALSE(forced.matches("Sure! " + one));
  EXPECT_TRUE(validate_spec(R"({"regex": "a+"})").ok());
  EXPECT_FALSE(validate_spec(R"({"regex": "(a"})").ok());
  EXPECT_FALSE(validate_spec(R"({"json_schema": {"type": "string", "maxLength": 100000}})").ok());
  EXPECT_FALSE(validate_spec("not json").ok());
}

// Found while adding structured_spec_fuzz: the frontend's size check (validate_spec, on its I/O thread)
// walked every path through shared subtrees, and an array's item schema appears twice in the array's
// tree, so n nested arrays took 2^n steps (30 levels: hours; the check now visits each node once).
TEST(Spec, ValidatingNestedArraysVisitsEachNodeOnce) {
  std::string deep = R"({"type": "integer"})";
  for (int i = 0; i < 30; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  const Status s = validate_spec(R"({"json_schema": )" + deep + "}");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("too large to enforce"), std::string::npos) << s.message();
  std::string small = R"({"type": "integer"})";
  for (int i = 0; i < 3; ++i) small = R"({"type": "array", "items": )" + small + "}";
  EXPECT_TRUE(validate_spec(R"({"json_schema": )" + small + "}").ok());
}


// Found while adding structured_spec_fuzz: each use of a $ref built its target's tree again, so a chain
// of definitions that each name the next more than once grew exponentially (a 600-byte schema took
// minutes and 10 GB in the frontend's validate_spec). A target is now built once and shared.
TEST(JsonSchemaGrammar, RefTargetsAreBuiltOnce) {
  const NodePtr g = json_schema_grammar(json::parse(
      R"({"$defs": {"a": {"type": "integer"}}, "anyOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/a"}]})"));
  ASSERT_EQ(g->kind, Node::Kind::kSeq);  // whitespace, the value, whitespace
  const NodePtr& any = g->kids[1];
  ASSERT_EQ(any->kind, Node::Kind::kAlt);
  ASSERT_EQ(any->kids.size(), 2u);
  EXPECT_EQ(any->kids[0].get(), any->kids[1].get());
  // 14 definitions, each naming the next twice: 2^14 uses of the last one, refused by size at once.
  json defs = json::object();
  for (int i = 0; i < 14; ++i) {
    const json ref = {{"$ref", "#/$defs/d" + std::to_string(i + 1)}};
    defs["d" + std::to_string(i)] = {{"anyOf", json::array({ref, ref})}};
  }
  defs["d14"] = {{"type", "integer"}};
  const Status s = validate_spec(json{{"json_schema", {{"$defs", defs}, {"$ref", "#/$defs/d0"}}}}.dump());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("too large to enforce"), std::string::npos) << s.message();
}


// Found while adding structured_spec_fuzz: the subset construction had no bound on its work, only on the
// DFA's size, and DFAs of a few thousand states that each hold thousands of NFA states took the worker
// minutes (a guided_regex or schema pattern from any client). Both are now refused quickly by name.
TEST(RegexGrammar, CompileWorkIsBounded) {
  for (const char* pattern : {"((a{0,20}){0,20}){0,20}", "(a|b|ab|ba){0,1000}"}) {
    try {
      const Dfa d = compile_dfa(parse_regex(pattern));
      ADD_FAILURE() << pattern << " compiled to " << d.num_states << " states";
    } catch (const GrammarError& e) {
      EXPECT_NE(std::string(e.what()).find("too complex"), std::string::npos) << e.what();
    }
  }
  DfaLimits small;
  small.max_subset_steps = 100;
  EXPECT_THROW(compile_dfa(parse_regex("[a-z]{0,100}"), small), GrammarError);
  EXPECT_TRUE(compile_dfa(parse_regex("[a-z]{0,100}")).matches("abc"));
}

}  // namespace
}  // namespace tandem::structured
