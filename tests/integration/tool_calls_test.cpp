// End-to-end tool calling (issue 21) on the real `tandem` binary: a fake engine scripted to write
// tool calls (its tokens arrive one per chunk, so the tags come split across streamed chunks) behind a
// frontend with --tool-call-parser (hermes, with the qwen3 reasoning parser before it; llama3_json):
// message.tool_calls and finish_reason "tool_calls", whole and streamed; malformed calls as content;
// tools reaching the prompt (and left out with tool_choice "none"); the 400s; `serve` passing the
// flag; and the official openai npm client reading the calls.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

std::string qwen3_tokenizer() { return std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3"; }
bool have_tokenizer() { return std::filesystem::exists(qwen3_tokenizer() + "/tokenizer.json"); }

const json kTools = json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
  {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}])");

const char* kHermesScript =
    "<think>\nThe user wants weather and news.\n</think>\n\n"
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
    "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"news today\"}}\n</tool_call>";

json chat_request(bool with_tools) {
  json r = {{"messages", {{{"role", "user"}, {"content", "Weather in Paris, and the news?"}}}}, {"max_tokens", 200}};
  if (with_tools) r["tools"] = kTools;
  return r;
}

struct StreamedReply {
  std::string reasoning, content, finish_reason;
  std::map<int, json> calls;  // index -> {id, name, arguments}
  int header_deltas = 0, argument_deltas = 0;
};

StreamedReply read_stream(const HttpResponse& r) {
  StreamedReply out;
  for (const auto& e : sse_events(r.body)) {
    if (e == "[DONE]") continue;
    const json chunk = json::parse(e);
    if (chunk["choices"].empty()) continue;
    const json& choice = chunk["choices"][0];
    const json& delta = choice["delta"];
    out.reasoning += delta.value("reasoning_content", "");
    if (delta.contains("content") && delta["content"].is_string()) out.content += delta["content"].get<std::string>();
    for (const auto& tc : delta.value("tool_calls", json::array())) {
      const int index = tc["index"];
      if (tc.contains("id")) {
        ++out.header_deltas;
        EXPECT_EQ(tc["type"], "function");
        out.calls[index] = {{"id", tc["id"]}, {"name", tc["function"]["name"]}, {"arguments", ""}};
      } else {
        ++out.argument_deltas;
      }
      out.calls[index]["arguments"] = out.calls[index]["arguments"].get<std::string>() + tc["function"].value("arguments", "");
    }
    if (choice["finish_reason"].is_string()) out.finish_reason = choice["finish_reason"];
  }
  return out;
}

TEST(ToolCalls, HermesCallsAfterAThinkBlockWholeAndStreamed) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--reasoning-parser", "qwen3", "--tool-call-parser", "hermes"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", kHermesScript});
  ASSERT_TRUE(cluster.wait_for_workers(1));

  HttpResponse whole = cluster.post("/v1/chat/completions", chat_request(true).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json body = json::parse(whole.body);
  const json& message = body["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "\nThe user wants weather and news.\n");
  EXPECT_TRUE(message["content"].is_null()) << message;
  ASSERT_EQ(message["tool_calls"].size(), 2u) << message;
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}}));
  EXPECT_EQ(message["tool_calls"][1]["function"]["name"], "search");
  EXPECT_EQ(message["tool_calls"][1]["function"]["arguments"], R"({"query":"news today"})");
  EXPECT_EQ(message["tool_calls"][0]["id"].get<std::string>().rfind("chatcmpl-tool-", 0), 0u);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  const int prompt_with_tools = body["usage"]["prompt_tokens"];

  json request = chat_request(true);
  request["stream"] = true;
  const StreamedReply streamed = read_stream(cluster.post("/v1/chat/completions", request.dump()));
  EXPECT_EQ(streamed.reasoning, "\nThe user wants weather and news.\n");
  EXPECT_EQ(streamed.content, "");  // the blanks after </think> and around the calls are not content
  EXPECT_EQ(streamed.header_deltas, 2);
  // The arguments stream as the engine writes them (one token a chunk here), not one delta per call...
  EXPECT_GT(streamed.argument_deltas, 2 * 3);
  ASSERT_EQ(streamed.calls.size(), 2u);
  EXPECT_EQ(streamed.calls.at(0)["name"], "get_weather");
  // ...and joined they are the whole reply's arguments.
  EXPECT_EQ(streamed.calls.at(0)["arguments"], message["tool_calls"][0]["function"]["arguments"]);
  EXPECT_EQ(streamed.calls.at(1)["arguments"], message["tool_calls"][1]["function"]["arguments"]);
  EXPECT_EQ(streamed.calls.at(0)["id"].get<std::string>().rfind("chatcmpl-tool-", 0), 0u);
  EXPECT_EQ(streamed.finish_reason, "tool_calls");

  // The tools are in the prompt the template rendered; tool_choice "none" leaves them out.
  const json plain = json::parse(cluster.post("/v1/chat/completions", chat_request(false).dump()).body);
  json none = chat_request(true);
  none["tool_choice"] = "none";
  const json without = json::parse(cluster.post("/v1/chat/completions", none.dump()).body);
  EXPECT_GT(prompt_with_tools, plain["usage"]["prompt_tokens"].get<int>() + 100);
  EXPECT_EQ(without["usage"]["prompt_tokens"], plain["usage"]["prompt_tokens"]);
  EXPECT_FALSE(without["choices"][0]["message"].contains("tool_calls"));  // not read for calls either
  EXPECT_EQ(without["choices"][0]["finish_reason"], "stop");

  // The next turn: the assistant's calls and the tools' results render through the template.
  json next = chat_request(true);
  next["messages"].push_back(message);
  next["messages"].back().erase("reasoning_content");
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", message["tool_calls"][0]["id"]}, {"content", "21C"}});
  next["messages"].push_back({{"role", "tool"}, {"tool_call_id", message["tool_calls"][1]["id"]}, {"content", "[]"}});
  HttpResponse second = cluster.post("/v1/chat/completions", next.dump());
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_GT(json::parse(second.body)["usage"]["prompt_tokens"].get<int>(), prompt_with_tools + 30);

  // A named function that is not among the tools is a 400 naming it.
  json unknown = chat_request(true);
  unknown["tool_choice"] = {{"type", "function"}, {"function", {{"name", "get_time"}}}};
  HttpResponse refused = cluster.post("/v1/chat/completions", unknown.dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("get_time"), std::string::npos) << refused.body;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(ToolCalls, MalformedCallJsonComesBackAsContent) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  const std::string script = "<tool_call>\n{\"name\": get_weather, \"arguments\": {}}\n</tool_call>";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--tool-call-parser", "hermes"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", script});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  HttpResponse whole = cluster.post("/v1/chat/completions", chat_request(true).dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json body = json::parse(whole.body);
  EXPECT_EQ(body["choices"][0]["message"]["content"], script);
  EXPECT_FALSE(body["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  json request = chat_request(true);
  request["stream"] = true;
  const StreamedReply streamed = read_stream(cluster.post("/v1/chat/completions", request.dump()));
  EXPECT_EQ(streamed.content, script);
  EXPECT_TRUE(streamed.calls.empty());
  EXPECT_EQ(streamed.finish_reason, "stop");
}

// A call whose header went out ({"name": ..., "arguments": { read) stays a call when the model breaks
// its JSON afterwards: the arguments are what it wrote, the same whole and streamed (docs/serving.md).
TEST(ToolCalls, ACallBrokenAfterItsHeaderIsTheSameCallWholeAndStreamed) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  const std::string script = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par</tool_call> done";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--tool-call-parser", "hermes"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", script});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const json body = json::parse(cluster.post("/v1/chat/completions", chat_request(true).dump()).body);
  const json& message = body["choices"][0]["message"];
  ASSERT_EQ(message["tool_calls"].size(), 1u) << body;
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], R"({"city":"Par)");
  EXPECT_EQ(message["content"], "Checking. done");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  json request = chat_request(true);
  request["stream"] = true;
  const StreamedReply streamed = read_stream(cluster.post("/v1/chat/completions", request.dump()));
  ASSERT_EQ(streamed.calls.size(), 1u);
  EXPECT_EQ(streamed.calls.at(0)["arguments"], R"({"city":"Par)");
  EXPECT_EQ(streamed.content, "Checking. done");
  EXPECT_EQ(streamed.finish_reason, "tool_calls");
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(ToolCalls, Llama3JsonCallsSeparatedBySemicolons) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  const std::string script =
      "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"search\", \"parameters\": {\"query\": \"x\"}}";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--tool-call-parser", "llama3_json"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", script});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const json body = json::parse(cluster.post("/v1/chat/completions", chat_request(true).dump()).body);
  const json& calls = body["choices"][0]["message"]["tool_calls"];
  ASSERT_EQ(calls.size(), 2u) << body;
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(calls[0]["function"]["arguments"], R"({"city":"Paris"})");
  EXPECT_EQ(calls[1]["function"]["arguments"], R"({"query":"x"})");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "tool_calls");
  json request = chat_request(true);
  request["stream"] = true;
  const StreamedReply streamed = read_stream(cluster.post("/v1/chat/completions", request.dump()));
  ASSERT_EQ(streamed.calls.size(), 2u);
  EXPECT_EQ(streamed.calls.at(1)["name"], "search");
  EXPECT_EQ(streamed.calls.at(0)["arguments"], calls[0]["function"]["arguments"]);
  EXPECT_EQ(streamed.calls.at(1)["arguments"], calls[1]["function"]["arguments"]);
  EXPECT_GT(streamed.argument_deltas, 2);
  EXPECT_EQ(streamed.content, "");
}

TEST(ToolCalls, ToolsWithoutTheParserFlagAreRefused) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer()});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer()});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  HttpResponse r = cluster.post("/v1/chat/completions", chat_request(true).dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("--tool-call-parser"), std::string::npos) << r.body;
}

TEST(ToolCalls, UnknownParserIsRefusedAtStartAndServePassesTheFlag) {
  char dir_template[] = "/tmp/tandem-tools-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  Process frontend({tandem_binary(), "frontend", "--port", "0", "--tool-call-parser", "mistral"}, dir + "/frontend.log");
  for (int i = 0; i < 200 && frontend.running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_FALSE(frontend.running());
  EXPECT_NE(frontend.exit_code(), 0);
  EXPECT_NE(shell("cat " + dir + "/frontend.log").find("--tool-call-parser: unknown parser 'mistral'"), std::string::npos);

  ServeProcess serve("tools-serve", {"--model", "random:tiny-qwen3", "--engine", "fake", "--num-prefill-workers", "0",
                                     "--child-log-level", "warn", "--tool-call-parser", "hermes", "--enable-auto-tool-choice"});
  const int port = serve.port();
  ASSERT_GT(port, 0);
  ASSERT_TRUE(serve.wait_for_workers(1, 60000)) << serve.log();
  EXPECT_NE(shell("ps -o args= --ppid " + std::to_string(serve.process().pid())).find("--tool-call-parser hermes"), std::string::npos);
  json request = chat_request(true);
  request["max_tokens"] = 3;
  HttpResponse r = http(port, "POST", "/v1/chat/completions", request.dump(), {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 200) << r.body;
  serve.terminate();
  std::filesystem::remove_all(dir);
}

// The official openai npm client sends tools and reads tool_calls, streamed and not.
TEST(ToolCalls, OfficialOpenAiNodeClientReadsToolCalls) {
  const std::string npm_dir = std::getenv("TANDEM_NPM_DIR") ? std::getenv("TANDEM_NPM_DIR") : std::string(TANDEM_DATA_DIR) + "/npm";
  if (!std::filesystem::exists(npm_dir + "/node_modules/openai")) GTEST_SKIP() << "no openai npm package in " << npm_dir;
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no node";
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--reasoning-parser", "qwen3", "--tool-call-parser", "hermes"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", kHermesScript});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  int status = 0;
  const std::string out = shell("node " + std::string(TANDEM_SOURCE_DIR) + "/tests/integration/openai_tools_client.mjs http://127.0.0.1:" +
                                    std::to_string(cluster.http_port()) + " " + npm_dir + " 2>&1",
                                &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("openai tools client: ok"), std::string::npos) << out;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

}  // namespace
}  // namespace tandem::testing
