// tool_choice "required" and a named function are enforced by constrained decoding (issue 21): the
// random-weight demo model under `tandem serve --tool-call-parser hermes`, which left free would write
// anything, must answer with calls of the offered tools whose arguments follow their schemas.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <set>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
    "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}}}])");

class ForcedToolCalls : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3/tokenizer.json")) GTEST_SKIP() << "no tokenizer data";
    serve_.emplace("forced-tools", std::vector<std::string>{"--model", "random:tiny-qwen3", "--threads", "1", "--served-model-name", "tiny",
                                                            "--tool-call-parser", "hermes", "--child-log-level", "warn"});
    port_ = serve_->port();
    ASSERT_GT(port_, 0);
    ASSERT_TRUE(serve_->wait_for_workers(2, 120000)) << serve_->log();
  }
  void TearDown() override {
    if (serve_) serve_->terminate();
  }

  json chat(const json& tool_choice, int seed, bool parallel = true) {
    HttpResponse r = http(port_, "POST", "/v1/chat/completions",
                          json{{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
                               {"tools", kTools}, {"tool_choice", tool_choice}, {"parallel_tool_calls", parallel},
                               {"max_tokens", 160}, {"seed", seed}, {"temperature", 1.0}}
                              .dump(),
                          {{"Content-Type", "application/json"}}, 240000);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body, nullptr, false);
  }

  // Every call names an offered tool and its arguments hold that tool's schema.
  static void expect_valid_calls(const json& message, const std::set<std::string>& names) {
    ASSERT_TRUE(message.contains("tool_calls")) << message.dump();
    ASSERT_FALSE(message["tool_calls"].empty()) << message.dump();
    for (const json& call : message["tool_calls"]) {
      const std::string name = call["function"]["name"];
      EXPECT_TRUE(names.count(name)) << name;
      const json args = json::parse(call["function"]["arguments"].get<std::string>(), nullptr, false);
      ASSERT_TRUE(args.is_object()) << call.dump();
      if (name == "get_weather") {
        ASSERT_TRUE(args.contains("city") && args["city"].is_string()) << args.dump();
        ASSERT_TRUE(args.contains("days") && args["days"].is_number_integer()) << args.dump();
        EXPECT_GE(args["days"].get<int>(), 1);
        EXPECT_LE(args["days"].get<int>(), 7);
        EXPECT_EQ(args.size(), 2u) << args.dump();
      } else {
        ASSERT_TRUE(args.contains("zone")) << args.dump();
        EXPECT_TRUE(args["zone"] == "UTC" || args["zone"] == "CET") << args.dump();
        EXPECT_EQ(args.size(), 1u) << args.dump();
      }
    }
  }

  int port_ = 0;
  std::optional<ServeProcess> serve_;
};

TEST_F(ForcedToolCalls, RequiredGivesCallsOfTheOfferedTools) {
  for (int seed = 1; seed <= 3; ++seed) {
    const json reply = chat("required", seed);
    ASSERT_FALSE(reply.is_discarded());
    EXPECT_EQ(reply["choices"][0]["finish_reason"], "tool_calls") << reply.dump();
    expect_valid_calls(reply["choices"][0]["message"], {"get_weather", "get_time"});
  }
  // parallel_tool_calls false: exactly one call.
  const json single = chat("required", 7, /*parallel=*/false);
  ASSERT_FALSE(single.is_discarded());
  expect_valid_calls(single["choices"][0]["message"], {"get_weather", "get_time"});
  EXPECT_EQ(single["choices"][0]["message"]["tool_calls"].size(), 1u) << single.dump();
}

TEST_F(ForcedToolCalls, NamedChoiceGivesExactlyThatCall) {
  for (int seed = 1; seed <= 3; ++seed) {
    const json reply = chat({{"type", "function"}, {"function", {{"name", "get_time"}}}}, seed);
    ASSERT_FALSE(reply.is_discarded());
    EXPECT_EQ(reply["choices"][0]["finish_reason"], "tool_calls") << reply.dump();
    expect_valid_calls(reply["choices"][0]["message"], {"get_time"});
    EXPECT_EQ(reply["choices"][0]["message"]["tool_calls"].size(), 1u) << reply.dump();
  }
}

TEST_F(ForcedToolCalls, ForcedChoiceWithStructuredOutputIsRefused) {
  HttpResponse r = http(port_, "POST", "/v1/chat/completions",
                        json{{"model", "tiny"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tools", kTools},
                             {"tool_choice", "required"}, {"response_format", {{"type", "json_object"}}}}
                            .dump(),
                        {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "tool_choice") << r.body;
}

}  // namespace
}  // namespace tandem::testing
