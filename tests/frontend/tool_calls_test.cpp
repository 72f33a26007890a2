// Tool calling's request side (tools, tool_choice, parallel_tool_calls, the messages' tool fields),
// the constraint a forced tool_choice puts on the reply, and the lifecycle with --tool-call-parser:
// message.tool_calls and finish_reason "tool_calls", streamed as header and argument deltas, and the
// 400s (no parser, unknown function).
#include <gtest/gtest.h>

#include "fakes.h"
#include "frontend/openai.h"
#include "frontend/tool_calls.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
using testing::ByteCodec;

const char* kTools =
    R"([{"type":"function","function":{"name":"get_weather","description":"Weather.","parameters":{"type":"object",)"
    R"("properties":{"city":{"type":"string"}},"required":["city"]}}},{"type":"function","function":{"name":"now"}}])";

std::optional<ApiError> parse_chat(const std::string& extra, GenerationRequest* out) {
  return parse_generation_request(R"({"messages":[{"role":"user","content":"x"}])" + extra + "}", true, out);
}

TEST(ToolRequest, ChoicesAndDefaults) {
  GenerationRequest r;
  ASSERT_FALSE(parse_chat(std::string(R"(,"tools":)") + kTools, &r));
  EXPECT_EQ(r.tools.choice.kind, ToolChoice::Kind::kAuto);  // the default with tools
  EXPECT_TRUE(r.tools.active());
  EXPECT_TRUE(r.tools.parallel_tool_calls);
  // The tools reach the template as sent, keys in the client's order.
  EXPECT_EQ(r.tools.template_tools().dump(), ordered_json::parse(kTools).dump());
  EXPECT_EQ(r.tools.template_tools()[0]["function"].begin().key(), "name");

  GenerationRequest none;
  ASSERT_FALSE(parse_chat(std::string(R"(,"tool_choice":"none","tools":)") + kTools, &none));
  EXPECT_FALSE(none.tools.active());
  EXPECT_TRUE(none.tools.template_tools().is_null());  // "none" omits the tools from the prompt

  GenerationRequest named;
  ASSERT_FALSE(parse_chat(std::string(R"(,"parallel_tool_calls":false,"tool_choice":{"type":"function","function":{"name":"now"}},"tools":)") +
                              kTools,
                          &named));
  EXPECT_EQ(named.tools.choice.kind, ToolChoice::Kind::kNamed);
  EXPECT_EQ(named.tools.choice.name, "now");
  EXPECT_FALSE(named.tools.parallel_tool_calls);

  GenerationRequest required, empty, no_tools;
  ASSERT_FALSE(parse_chat(std::string(R"(,"tool_choice":"required","tools":)") + kTools, &required));
  EXPECT_EQ(required.tools.choice.kind, ToolChoice::Kind::kRequired);
  ASSERT_FALSE(parse_chat(R"(,"tools":[])", &empty));
  EXPECT_FALSE(empty.tools.active());
  ASSERT_FALSE(parse_chat(R"(,"tool_choice":"auto")", &no_tools));
  EXPECT_FALSE(no_tools.tools.active());
}

TEST(ToolRequest, BadToolsAndChoicesNameTheParameter) {
  struct Case {
    std::string extra, param, message_part;
  } cases[] = {
      {std::string(R"(,"tool_choice":{"type":"function","function":{"name":"nope"}},"tools":)") + kTools, "tool_choice", "'nope'"},
      {std::string(R"(,"tool_choice":"sometimes","tools":)") + kTools, "tool_choice", "sometimes"},
      {std::string(R"(,"tool_choice":{"function":"now"},"tools":)") + kTools, "tool_choice", "object"},
      {R"(,"tool_choice":"required")", "tool_choice", "needs 'tools'"},
      {R"(,"tool_choice":{"type":"function","function":{"name":"f"}})", "tool_choice", "'f'"},
      {std::string(R"(,"parallel_tool_calls":"yes","tools":)") + kTools, "parallel_tool_calls", "boolean"},
      {R"(,"tools":{"type":"function"})", "tools", "list"},
      {R"(,"tools":[{"type":"function","function":{"name":"f"}},{"type":"retrieval"}])", "tools[1].type", "function"},
      {R"(,"tools":[{"type":"function"}])", "tools[0].function", "object"},
      {R"(,"tools":[{"type":"function","function":{"name":""}}])", "tools[0].function.name", "non-empty"},
      {R"(,"tools":[{"type":"function","function":{"name":"f","parameters":"{}"}}])", "tools[0].function.parameters", "schema"},
      {R"(,"tools":[{"type":"function","function":{"name":"f","description":3}}])", "tools[0].function.description", "string"},
  };
  for (const auto& c : cases) {
    GenerationRequest r;
    auto error = parse_chat(c.extra, &r);
    ASSERT_TRUE(error) << c.extra;
    EXPECT_EQ(error->status, 400) << c.extra;
    EXPECT_EQ(error->param, c.param) << c.extra << ": " << error->message;
    EXPECT_NE(error->message.find(c.message_part), std::string::npos) << error->message;
  }
  // Completions have no tools: as before, only with tool_choice "none".
  GenerationRequest completion;
  auto error = parse_generation_request(std::string(R"({"prompt":"x","tools":)") + kTools + "}", false, &completion);
  ASSERT_TRUE(error);
  EXPECT_EQ(error->param, "tools");
  EXPECT_FALSE(parse_generation_request(std::string(R"({"prompt":"x","tool_choice":"none","tools":)") + kTools + "}", false,
                                        &completion));
}

TEST(ToolMessages, CallsArgumentsBecomeObjectsInTheClientsOrderAndToolIdsPass) {
  GenerationRequest r;
  ASSERT_FALSE(parse_generation_request(
      R"({"messages":[{"role":"user","content":"Weather?"},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"get_weather","arguments":"{\"unit\": \"celsius\", \"city\": \"Paris\"}"}}]},
          {"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"21C"}]})",
      true, &r));
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1].dump(),
            R"({"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":{"unit":"celsius","city":"Paris"}}}]})");
  EXPECT_EQ(r.messages[2].dump(), R"({"role":"tool","content":"21C","name":"get_weather","tool_call_id":"call_1"})");

  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{oops"}}]})",
            "messages[0].tool_calls[0].function.arguments"},
           {R"({"role":"assistant","tool_calls":{"function":{}}})", "messages[0].tool_calls"},
           {R"({"role":"assistant","tool_calls":[{"type":"function"}]})", "messages[0].tool_calls[0].function"},
           {R"({"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]})", "messages[0].tool_calls[0].function.name"},
           {R"({"role":"tool","tool_call_id":5,"content":"x"})", "messages[0].tool_call_id"},
       }) {
    GenerationRequest bad;
    auto error = parse_generation_request(R"({"messages":[)" + body + "]}", true, &bad);
    ASSERT_TRUE(error) << body;
    EXPECT_EQ(error->param, param) << body << ": " << error->message;
  }
}

ToolRequest tool_request(const std::string& choice, bool parallel = true) {
  GenerationRequest r;
  EXPECT_FALSE(parse_chat(R"(,"tool_choice":)" + choice + R"(,"parallel_tool_calls":)" + (parallel ? "true" : "false") +
                              R"(,"tools":)" + kTools,
                          &r));
  return r.tools;
}

TEST(ToolCallConstraint, RequiredAndNamedChoicesConstrainTheReplyInTheParsersForm) {
  EXPECT_FALSE(tool_call_constraint(tool_request(R"("auto")"), ToolParserKind::kHermes));
  EXPECT_FALSE(tool_call_constraint(tool_request(R"("none")"), ToolParserKind::kHermes));

  auto required = tool_call_constraint(tool_request(R"("required")"), ToolParserKind::kHermes);
  ASSERT_TRUE(required);
  EXPECT_EQ(required->call_prefix, "<tool_call>\n");
  EXPECT_EQ(required->call_suffix, "\n</tool_call>");
  EXPECT_EQ(required->separator, "\n");
  EXPECT_EQ(required->min_calls, 1);
  EXPECT_EQ(required->max_calls, -1);
  EXPECT_EQ(required->call_schema.dump(),
            R"({"anyOf":[{"type":"object","properties":{"name":{"type":"string","const":"get_weather"},"arguments":)"
            R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},"required":["name","arguments"],)"
            R"("additionalProperties":false},{"type":"object","properties":{"name":{"type":"string","const":"now"},)"
            R"("arguments":{"type":"object","properties":{}}},"required":["name","arguments"],"additionalProperties":false}]})");
  EXPECT_EQ(required->array_schema["items"], required->call_schema);
  EXPECT_EQ(required->array_schema["minItems"], 1);
  EXPECT_FALSE(required->array_schema.contains("maxItems"));
  EXPECT_NE(required->grammar.find("\"<tool_call>\\n\""), std::string::npos) << required->grammar;

  auto one = tool_call_constraint(tool_request(R"("required")", /*parallel=*/false), ToolParserKind::kHermes);
  EXPECT_EQ(one->max_calls, 1);
  EXPECT_EQ(one->array_schema["maxItems"], 1);

  auto named = tool_call_constraint(tool_request(R"({"type":"function","function":{"name":"get_weather"}})"),
                                    ToolParserKind::kLlama3Json);
  ASSERT_TRUE(named);
  EXPECT_EQ(named->max_calls, 1);
  EXPECT_EQ(named->call_prefix, "");
  EXPECT_EQ(named->separator, "; ");
  EXPECT_EQ(named->call_schema["properties"]["name"]["const"], "get_weather");
  EXPECT_TRUE(named->call_schema["properties"].contains("parameters"));  // Llama 3.1 spells them so
  EXPECT_EQ(named->call_schema["required"], ordered_json({"name", "parameters"}));

  // A reply in the constraint's form is read back by the parser as the calls it describes.
  const std::string reply = required->call_prefix + R"({"name": "get_weather", "arguments": {"city": "Oslo"}})" +
                            required->call_suffix + required->separator + required->call_prefix +
                            R"({"name": "now", "arguments": {}})" + required->call_suffix;
  const ToolReply parsed = ToolCallParser::parse(ToolParserKind::kHermes, reply);
  ASSERT_EQ(parsed.calls.size(), 2u);
  EXPECT_EQ(parsed.content, "");
  const ToolReply llama = ToolCallParser::parse(
      ToolParserKind::kLlama3Json, R"({"name": "get_weather", "parameters": {"city": "Oslo"}})" + named->separator +
                                       R"({"name": "get_weather", "parameters": {"city": "Rome"}})");
  EXPECT_EQ(llama.calls.size(), 2u);
}

class ToolLifecycleTest : public testing::LifecycleFixture<ByteCodec> {
 protected:
  ToolLifecycleTest() { worker_ = directory_.add("w1", rpc::pb::ROLE_BOTH, /*max_model_len=*/100000); }
  std::string last_id() { return directory_.last_sent(worker_).generate().request_id(); }
  void output(const std::string& text, bool finished, rpc::pb::FinishReason reason = rpc::pb::FINISH_STOP, int index = 0) {
    rpc::pb::Output out;
    out.set_request_id(last_id());
    out.set_index(index);
    out.add_token_ids(7);
    out.set_text(text);
    if (finished) {
      out.set_finished(true);
      out.set_finish_reason(reason);
    }
    lifecycle().on_output(worker_, out);
  }
  static std::string body(const std::string& extra) {
    return std::string(R"({"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":)") + kTools + extra + "}";
  }
  WorkerKey worker_ = 0;
};

TEST_F(ToolLifecycleTest, ToolsNeedTheParserFlag) {
  auto ex = start(body(""), /*chat=*/true);
  EXPECT_EQ(ex->status, 400);
  EXPECT_NE(ex->body.find("--tool-call-parser"), std::string::npos) << ex->body;
  EXPECT_NE(ex->body.find("\"param\":\"tools\""), std::string::npos) << ex->body;
  auto with_auto = start(body(R"(,"tool_choice":"auto")"), true);
  EXPECT_EQ(with_auto->status, 400);
  // tool_choice "none" needs no parser: the model is not to call the tools.
  auto none = start(body(R"(,"tool_choice":"none","max_tokens":2)"), true);
  EXPECT_EQ(none->status, 0);
  output("<tool_call>{\"name\": \"now\"}</tool_call>", true);
  const json reply = json::parse(none->body);
  EXPECT_EQ(reply["choices"][0]["message"]["content"], "<tool_call>{\"name\": \"now\"}</tool_call>");
  EXPECT_FALSE(reply["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "stop");
}

TEST_F(ToolLifecycleTest, RepliesCarryToolCallsAndFinishReasonToolCalls) {
  options_.tool_parser = ToolParserKind::kHermes;
  auto ex = start(body(R"(,"max_tokens":50)"), true);
  output("<tool_call>\n{\"name\": \"get_weather\", ", false);
  output("\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", true);
  ASSERT_EQ(ex->status, 200) << ex->body;
  const json message = json::parse(ex->body)["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(message["tool_calls"][0]["id"].get<std::string>().rfind("chatcmpl-tool-", 0), 0u);
  EXPECT_EQ(json::parse(ex->body)["choices"][0]["finish_reason"], "tool_calls");

  // Malformed call JSON is content, not an error; no calls, so the finish reason stays.
  auto bad = start(body(R"(,"max_tokens":50)"), true);
  output("<tool_call>{\"name\": get_weather}</tool_call>", true);
  ASSERT_EQ(bad->status, 200);
  EXPECT_EQ(json::parse(bad->body)["choices"][0]["message"]["content"], "<tool_call>{\"name\": get_weather}</tool_call>");
  EXPECT_EQ(json::parse(bad->body)["choices"][0]["finish_reason"], "stop");

  // A request without tools is not read for calls even with the parser on.
  auto plain = start(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":5})", true);
  output("<tool_call>{\"name\": \"now\"}</tool_call>", true);
  EXPECT_EQ(json::parse(plain->body)["choices"][0]["message"]["content"], "<tool_call>{\"name\": \"now\"}</tool_call>");
}

TEST_F(ToolLifecycleTest, StreamedCallsAreAHeaderDeltaThenArgumentDeltas) {
  options_.tool_parser = ToolParserKind::kHermes;
  options_.reasoning = ReasoningFormat::kQwen3;
  auto ex = start(body(R"(,"max_tokens":50,"stream":true)"), true);
  for (const char* piece : {"<think>\nCall it.\n</th", "ink>\n\nSure.\n<tool_", "call>\n{\"name\": \"get_weather\", \"arguments\": ",
                            "{\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"now\"}", "</tool_call>"}) {
    output(piece, false);
  }
  output("", true);
  ASSERT_TRUE(ex->ended);
  std::string reasoning, content;
  std::map<int, json> calls;  // index -> accumulated call
  std::string finish;
  for (size_t i = 0; i + 1 < ex->events.size(); ++i) {
    const json chunk = json::parse(ex->events[i].substr(6));
    const json& choice = chunk["choices"][0];
    const json& delta = choice["delta"];
    reasoning += delta.value("reasoning_content", "");
    if (delta.contains("content") && delta["content"].is_string()) content += delta["content"].get<std::string>();
    if (delta.contains("tool_calls")) {
      for (const auto& tc : delta["tool_calls"]) {
        const int index = tc["index"];
        if (!calls.count(index)) {
          // The first delta of a call carries its id, type and name.
          EXPECT_TRUE(tc.contains("id")) << tc;
          EXPECT_EQ(tc["type"], "function");
          EXPECT_TRUE(tc["function"].contains("name"));
          calls[index] = {{"id", tc["id"]}, {"name", tc["function"]["name"]}, {"arguments", ""}};
        } else {
          EXPECT_FALSE(tc.contains("id")) << tc;
        }
        calls[index]["arguments"] = calls[index]["arguments"].get<std::string>() + tc["function"].value("arguments", "");
      }
    }
    if (choice["finish_reason"].is_string()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(reasoning, "\nCall it.\n");
  EXPECT_EQ(content, "\n\nSure.");  // the answer as written after </think>; the blank before the call is not content
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0]["name"], "get_weather");
  EXPECT_EQ(calls[0]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(calls[1]["name"], "now");
  EXPECT_EQ(calls[1]["arguments"], "{}");
  EXPECT_NE(calls[0]["id"], calls[1]["id"]);
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
}

TEST_F(ToolLifecycleTest, ParallelToolCallsFalseKeepsTheFirstCall) {
  options_.tool_parser = ToolParserKind::kHermes;
  auto ex = start(body(R"(,"parallel_tool_calls":false)"), true);
  output("<tool_call>{\"name\": \"now\"}</tool_call><tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>", true);
  const json message = json::parse(ex->body)["choices"][0]["message"];
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "now");
}

}  // namespace
}  // namespace tandem::frontend
