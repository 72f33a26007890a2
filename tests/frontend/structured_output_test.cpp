// The structured-output parameters as the frontend reads them: each form becomes the constraint spec
// the workers enforce (schemas keep their property order), and what cannot be enforced is a 400 naming
// the parameter and the reason.
#include <gtest/gtest.h>

#include "frontend/openai.h"

namespace tandem::frontend {
namespace {

using ordered = nlohmann::ordered_json;

std::string guided_of(const std::string& body, bool chat = false) {
  GenerationRequest req;
  auto error = parse_generation_request(body, chat, &req);
  EXPECT_FALSE(error) << body << ": " << (error ? error->message : "");
  return req.sampling.guided();
}

std::optional<ApiError> error_of(const std::string& body) {
  GenerationRequest req;
  return parse_generation_request(body, /*chat=*/false, &req);
}

TEST(StructuredOutput, EachFormBecomesASpec) {
  EXPECT_EQ(guided_of(R"({"prompt":"x"})"), "");
  EXPECT_EQ(guided_of(R"({"prompt":"x","response_format":{"type":"text"}})"), "");
  EXPECT_EQ(guided_of(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})", true),
            R"({"json_object":true})");
  // The client's property order (zeta before alpha) survives.
  EXPECT_EQ(guided_of(R"({"prompt":"x","response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,
                         "schema":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}}}}}})"),
            R"({"json_schema":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}}}})");
  EXPECT_EQ(guided_of(R"({"prompt":"x","guided_json":{"type":"boolean"}})"), R"({"json_schema":{"type":"boolean"}})");
  EXPECT_EQ(guided_of(R"({"prompt":"x","guided_json":"{\"type\": \"null\"}"})"), R"({"json_schema":{"type":"null"}})");
  EXPECT_EQ(guided_of(R"({"prompt":"x","guided_regex":"[a-z]+"})"), R"({"regex":"[a-z]+"})");
  EXPECT_EQ(guided_of(R"({"prompt":"x","guided_choice":["yes","no"]})"), R"({"choice":["yes","no"]})");
}

TEST(StructuredOutput, UnenforceableFormsAre400s) {
  struct Case {
    const char* body;
    const char* param;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"prompt":"x","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string","format":"email"}}}})",
       "response_format", "'format'"},
      {R"({"prompt":"x","response_format":{"type":"json_schema"}})", "response_format", "json_schema"},
      {R"({"prompt":"x","response_format":{"type":"json_schema","json_schema":{"schema":[1]}}})", "response_format", "schema"},
      {R"({"prompt":"x","response_format":{"type":"grammar"}})", "response_format", "'grammar'"},
      {R"({"prompt":"x","guided_json":{"not":{"type":"null"}}})", "guided_json", "'not'"},
      {R"({"prompt":"x","guided_json":"{nope"})", "guided_json", "not JSON"},
      {R"({"prompt":"x","guided_json":{"type":"object","properties":{"a":{"$ref":"#/$defs/b"}}}})", "guided_json", "points nowhere"},
      {R"J({"prompt":"x","guided_regex":"a(?=b)"})J", "guided_regex", "lookaround"},
      {R"({"prompt":"x","guided_regex":3})", "guided_regex", "string"},
      {R"({"prompt":"x","guided_choice":"yes"})", "guided_choice", "array"},
      {R"({"prompt":"x","guided_json":{"type":"string"},"guided_regex":"a"})", "guided_regex", "only one"},
      {R"({"prompt":"x","guided_json":{"type":"array","items":{"type":"string"},"minItems":100000}})", "guided_json", "minItems"},
  };
  for (const Case& c : cases) {
    auto error = error_of(c.body);
    ASSERT_TRUE(error) << c.body;
    EXPECT_EQ(error->status, 400) << c.body;
    EXPECT_EQ(error->param, c.param) << c.body;
    EXPECT_NE(error->message.find(c.needle), std::string::npos) << c.body << ": " << error->message;
  }
}

}  // namespace
}  // namespace tandem::frontend
