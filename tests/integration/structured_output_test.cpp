// Structured output end to end (issue 21): `tandem serve` on the random-weight demo model, every prompt
// prefilled remotely (so the first token is drawn under the constraint on the prefill worker and the rest
// on the decode worker), replies validated by independent validators (structured_output_client.mjs:
// ajv, RegExp, the official openai client), and unsupported schemas refused with a 400 naming them.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <optional>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

std::string npm_dir() {
  return std::getenv("TANDEM_NPM_DIR") ? std::getenv("TANDEM_NPM_DIR") : std::string(TANDEM_DATA_DIR) + "/npm";
}

class StructuredServe : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3/tokenizer.json")) GTEST_SKIP() << "no tokenizer data";
    serve_.emplace("structured", std::vector<std::string>{"--model", "random:tiny-qwen3", "--threads", "1", "--max-local-prefill", "0",
                                                          "--served-model-name", "tiny", "--child-log-level", "warn"});
    port_ = serve_->port();
    ASSERT_GT(port_, 0);
    ASSERT_TRUE(serve_->wait_for_workers(2, 120000)) << serve_->log();
  }
  void TearDown() override {
    if (serve_) serve_->terminate();
  }

  HttpResponse post(const std::string& path, const json& body) {
    return http(port_, "POST", path, body.dump(), {{"Content-Type", "application/json"}}, 240000);
  }

  int port_ = 0;
  std::optional<ServeProcess> serve_;
};

// Without node: the replies parse as JSON, hold their required keys, and the regex/choice forms hold.
TEST_F(StructuredServe, RandomModelRepliesFollowTheirConstraints) {
  const json schema = json::parse(R"({"type": "object", "properties": {
      "city": {"type": "string", "maxLength": 16}, "temp_c": {"type": "integer", "minimum": -60, "maximum": 60},
      "sky": {"enum": ["clear", "cloudy", "rain"]}, "wind": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 2}},
      "required": ["city", "temp_c", "sky", "wind"], "additionalProperties": false})");
  for (int seed = 1; seed <= 2; ++seed) {
    HttpResponse r = post("/v1/chat/completions", {{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "Weather?"}}}},
                                                   {"max_tokens", 120}, {"seed", seed}, {"temperature", 1.0},
                                                   {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "w"}, {"schema", schema}}}}}});
    ASSERT_EQ(r.status, 200) << r.body;
    const json reply = json::parse(r.body);
    const std::string content = reply["choices"][0]["message"]["content"];
    const json doc = json::parse(content, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << content;
    for (const char* key : {"city", "temp_c", "sky", "wind"}) EXPECT_TRUE(doc.contains(key)) << content;
    EXPECT_LE(doc["city"].get<std::string>().size(), 16u * 4);
    EXPECT_GE(doc["temp_c"].get<int>(), -60);
    EXPECT_LE(doc["temp_c"].get<int>(), 60);
    EXPECT_EQ(reply["choices"][0]["finish_reason"], "stop") << content;
  }
  HttpResponse choice = post("/v1/completions", {{"model", "tiny"}, {"prompt", "Answer:"}, {"max_tokens", 8}, {"temperature", 1.0},
                                                 {"guided_choice", {"yes", "no"}}});
  ASSERT_EQ(choice.status, 200) << choice.body;
  const std::string text = json::parse(choice.body)["choices"][0]["text"];
  EXPECT_TRUE(text == "yes" || text == "no") << text;
  // A budget shorter than the shortest valid text cannot be met: the reply is cut (length), never wrong
  // in what it has.
  HttpResponse short_budget = post("/v1/completions", {{"model", "tiny"}, {"prompt", "x"}, {"max_tokens", 1},
                                                       {"guided_regex", "abcdefghij"}});
  ASSERT_EQ(short_budget.status, 200) << short_budget.body;
  EXPECT_EQ(json::parse(short_budget.body)["choices"][0]["finish_reason"], "length");
  const std::string cut = json::parse(short_budget.body)["choices"][0]["text"];
  EXPECT_FALSE(cut.empty());
  EXPECT_EQ(std::string("abcdefghij").rfind(cut, 0), 0u) << cut;
}

TEST_F(StructuredServe, UnsupportedConstraintsAre400sNamingThem) {
  struct Case {
    json body;
    std::string param, needle;
  };
  const json messages = {{{"role", "user"}, {"content", "x"}}};
  std::vector<Case> cases = {
      {{{"messages", messages}, {"response_format", {{"type", "json_schema"}, {"json_schema", {{"schema", {{"type", "string"}, {"format", "date"}}}}}}}},
       "response_format", "'format'"},
      {{{"messages", messages}, {"guided_json", {{"oneOf", json::array({{{"type", "string"}}})}}}}, "guided_json", "'oneOf'"},
      {{{"messages", messages}, {"guided_regex", "(a)\\1"}}, "guided_regex", "backreferences"},
      {{{"messages", messages}, {"guided_choice", json::array()}}, "guided_choice", "guided_choice"},
      {{{"messages", messages}, {"guided_regex", "a"}, {"guided_choice", {"a"}}}, "guided_choice", "only one"},
      {{{"messages", messages}, {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}}}}, "response_format", "schema"},
  };
  for (const Case& c : cases) {
    HttpResponse r = post("/v1/chat/completions", c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    const json error = json::parse(r.body)["error"];
    EXPECT_EQ(error["param"], c.param) << r.body;
    EXPECT_NE(error["message"].get<std::string>().find(c.needle), std::string::npos) << r.body;
  }
}

// The independent validators: ajv over realistic schemas, RegExp, the choice list, the openai client.
TEST_F(StructuredServe, RepliesValidateWithAjvAndTheOpenAiClient) {
  if (!std::filesystem::exists(npm_dir() + "/node_modules/ajv") || !std::filesystem::exists(npm_dir() + "/node_modules/openai")) {
    GTEST_SKIP() << "no ajv/openai npm packages in " << npm_dir() << " (scripts/fetch_data.sh)";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no node";
  int status = 0;
  const std::string out = shell("node " + std::string(TANDEM_SOURCE_DIR) + "/tests/integration/structured_output_client.mjs http://127.0.0.1:" +
                                    std::to_string(port_) + " " + npm_dir() + " tiny 2>&1",
                                &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("structured output client: ok"), std::string::npos) << out;
}

}  // namespace
}  // namespace tandem::testing
