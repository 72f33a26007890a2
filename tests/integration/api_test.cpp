// End-to-end tests of issue 21's API features on the real `tandem` binary (frontend and fake-engine
// workers on loopback, harness.h): served model names (the worker's, its aliases, the frontend's
// override), batched completions prompts (streamed and not), chat_template_kwargs reaching Qwen3's
// template, and the reasoning parser over a fake engine scripted to write a think block.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

std::string qwen3_tokenizer() { return std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3"; }
bool have_tokenizer() { return std::filesystem::exists(qwen3_tokenizer() + "/tokenizer.json"); }

std::vector<std::string> model_ids(Cluster& cluster) {
  HttpResponse r = http(cluster.http_port(), "GET", "/v1/models");
  std::vector<std::string> ids;
  const json body = json::parse(r.body);
  for (const auto& m : body["data"]) ids.push_back(m["id"]);
  return ids;
}

std::vector<json> data_events(const HttpResponse& r) {
  std::vector<json> out;
  for (const auto& e : sse_events(r.body)) {
    if (e != "[DONE]") out.push_back(json::parse(e));
  }
  return out;
}

// The worker's names: the first and its aliases are listed and routed; any other is a 404 in
// OpenAI's shape. The seed's own request names the model "Qwen/Qwen3-0.6B".
TEST(Api, WorkerServedModelNamesAreListedAndAccepted) {
  Cluster cluster;
  cluster.add_worker("both", {"--engine", "fake", "--served-model-name", "Qwen/Qwen3-0.6B", "qwen3-small"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(model_ids(cluster), (std::vector<std::string>{"Qwen/Qwen3-0.6B", "qwen3-small"}));
  for (const std::string name : {"Qwen/Qwen3-0.6B", "qwen3-small"}) {
    HttpResponse r = cluster.post("/v1/completions", R"({"model":")" + name + R"(","prompt":[1,2],"max_tokens":2})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["model"], name);
  }
  HttpResponse unknown = cluster.post("/v1/completions", R"({"model":"Qwen3-0.6B","prompt":[1,2],"max_tokens":2})");
  EXPECT_EQ(unknown.status, 404) << unknown.body;
  const json error = json::parse(unknown.body)["error"];
  EXPECT_EQ(error["param"], "model");
  EXPECT_EQ(error["type"], "not_found_error");
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// The frontend's names override the workers': exactly those are listed, each reaches every worker,
// and the worker's own name is no longer accepted.
TEST(Api, FrontendServedModelNamesOverrideTheWorkers) {
  Cluster cluster({"--served-model-name", "front-a", "front-b"});
  cluster.add_worker("both", {"--engine", "fake", "--served-model-name", "worker-name"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(model_ids(cluster), (std::vector<std::string>{"front-a", "front-b"}));
  EXPECT_EQ(cluster.post("/v1/completions", R"({"model":"front-b","prompt":[1],"max_tokens":1})").status, 200);
  EXPECT_EQ(json::parse(cluster.post("/v1/completions", R"({"prompt":[1],"max_tokens":1})").body)["model"], "front-a");
  EXPECT_EQ(cluster.post("/v1/completions", R"({"model":"worker-name","prompt":[1],"max_tokens":1})").status, 404);
}

// 3 prompts x n = 2: six choices at prompt * 2 + choice; each prompt's choices equal what the same
// prompt gets alone (the fake engine's greedy tokens depend on the prompt only); usage summed.
TEST(Api, BatchedCompletionPromptsStreamedAndNot) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer()});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer()});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer()});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::vector<std::string> prompts = {"Hello there", "The capital of France is", "One two three four five"};
  std::vector<std::string> alone;
  int prompt_tokens = 0;
  for (const auto& p : prompts) {
    HttpResponse r = cluster.post("/v1/completions", json{{"prompt", p}, {"max_tokens", 4}, {"temperature", 0}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    const json body = json::parse(r.body);
    alone.push_back(body["choices"][0]["text"]);
    prompt_tokens += body["usage"]["prompt_tokens"].get<int>();
  }
  const json request = {{"prompt", prompts}, {"max_tokens", 4}, {"temperature", 0}, {"n", 2}};
  HttpResponse whole = cluster.post("/v1/completions", request.dump());
  ASSERT_EQ(whole.status, 200) << whole.body;
  const json body = json::parse(whole.body);
  ASSERT_EQ(body["choices"].size(), 6u) << whole.body;
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_EQ(body["choices"][i]["text"], alone[i / 2]) << "choice " << i;
    EXPECT_EQ(body["choices"][i]["finish_reason"], "length");
  }
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(body["usage"]["completion_tokens"], 6 * 4);

  json streamed = request;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  HttpResponse stream = cluster.post("/v1/completions", streamed.dump());
  ASSERT_EQ(stream.status, 200) << stream.body;
  EXPECT_EQ(sse_events(stream.body).back(), "[DONE]");
  const auto events = data_events(stream);
  std::vector<std::string> texts(6);
  std::set<int> finished;
  for (size_t e = 0; e + 1 < events.size(); ++e) {
    const json& choice = events[e]["choices"][0];
    const int index = choice["index"];
    ASSERT_TRUE(index >= 0 && index < 6) << events[e];
    texts[index] += choice["text"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finished.insert(index);
  }
  EXPECT_EQ(finished, (std::set<int>{0, 1, 2, 3, 4, 5}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(texts[i], alone[i / 2]) << "streamed choice " << i;
  EXPECT_EQ(events.back()["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 6 * 4);

  // Token-id lists batch too; a single id list stays one prompt; an empty list is refused.
  HttpResponse ids = cluster.post("/v1/completions", R"({"prompt":[[1,2],[3]],"max_tokens":2})");
  ASSERT_EQ(ids.status, 200) << ids.body;
  EXPECT_EQ(json::parse(ids.body)["choices"].size(), 2u);
  EXPECT_EQ(json::parse(ids.body)["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(json::parse(cluster.post("/v1/completions", R"({"prompt":[1,2],"max_tokens":2})").body)["choices"].size(), 1u);
  HttpResponse empty = cluster.post("/v1/completions", R"({"prompt":[],"max_tokens":2})");
  EXPECT_EQ(empty.status, 400);
  EXPECT_EQ(json::parse(empty.body)["error"]["param"], "prompt");
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// enable_thinking=false makes Qwen3's template close an empty think block in the prompt (jinja2's
// render: tests/data/tokenizer/chat/qwen3_cases.json "single_user/no_thinking"): "<think>", "\n\n",
// "</think>", "\n\n" are four tokens of Qwen3's vocabulary (151667, 271, 151668, 271).
TEST(Api, ChatTemplateKwargsChangeTheRenderedPrompt) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer()});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer()});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  json request = {{"messages", {{{"role", "user"}, {"content", "Hello! How are you?"}}}}, {"max_tokens", 1}};
  HttpResponse thinking = cluster.post("/v1/chat/completions", request.dump());
  request["chat_template_kwargs"] = {{"enable_thinking", false}};
  HttpResponse plain = cluster.post("/v1/chat/completions", request.dump());
  ASSERT_EQ(thinking.status, 200) << thinking.body;
  ASSERT_EQ(plain.status, 200) << plain.body;
  EXPECT_EQ(json::parse(plain.body)["usage"]["prompt_tokens"].get<int>(),
            json::parse(thinking.body)["usage"]["prompt_tokens"].get<int>() + 4);
  request["chat_template_kwargs"] = "no";
  EXPECT_EQ(cluster.post("/v1/chat/completions", request.dump()).status, 400);
}

// A fake engine scripted to write a think block and an answer; the frontend's --reasoning-parser
// splits it, whole and streamed (the script's tokens arrive one per chunk, so the tags come split).
TEST(Api, ReasoningParserSplitsAScriptedThinkBlock) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  const std::string script = "<think>\nThe user greets me.\n</think>\n\nHello! I am fine.";
  for (const std::string parser : {"qwen3", "deepseek_r1"}) {
    Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--reasoning-parser", parser});
    cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--fake-output", script});
    ASSERT_TRUE(cluster.wait_for_workers(1));
    json request = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 100}};
    HttpResponse whole = cluster.post("/v1/chat/completions", request.dump());
    ASSERT_EQ(whole.status, 200) << whole.body;
    const json body = json::parse(whole.body);
    const json& message = body["choices"][0]["message"];
    EXPECT_EQ(message["reasoning_content"], "\nThe user greets me.\n") << parser << whole.body;
    EXPECT_EQ(message["content"], "\n\nHello! I am fine.") << parser;
    EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
    const int completion_tokens = body["usage"]["completion_tokens"];
    EXPECT_GT(completion_tokens, 10);  // every token counted, the think block's too

    request["stream"] = true;
    request["stream_options"] = {{"include_usage", true}};
    HttpResponse stream = cluster.post("/v1/chat/completions", request.dump());
    ASSERT_EQ(stream.status, 200);
    std::string reasoning, content;
    for (const auto& e : data_events(stream)) {
      if (e["choices"].empty()) {
        EXPECT_EQ(e["usage"]["completion_tokens"], completion_tokens);
        continue;
      }
      const json& delta = e["choices"][0]["delta"];
      reasoning += delta.value("reasoning_content", "");
      content += delta.value("content", "");
      EXPECT_EQ(delta.value("content", "").find("think>"), std::string::npos) << e;
    }
    EXPECT_EQ(reasoning, "\nThe user greets me.\n") << parser;
    EXPECT_EQ(content, "\n\nHello! I am fine.") << parser;

    // Cut inside the think block by max_tokens: all of it is reasoning.
    request.erase("stream");
    request.erase("stream_options");
    request["max_tokens"] = 4;
    const json cut = json::parse(cluster.post("/v1/chat/completions", request.dump()).body);
    EXPECT_EQ(cut["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(cut["choices"][0]["message"]["content"], "") << cut;
    EXPECT_FALSE(cut["choices"][0]["message"]["reasoning_content"].get<std::string>().empty()) << cut;
    EXPECT_TRUE(cluster.wait_no_leaked_blocks());
  }
}

// The official openai npm client reads reasoning_content, batched choices and the served name.
TEST(Api, OfficialOpenAiNodeClientReadsTheNewFields) {
  const std::string npm_dir = std::getenv("TANDEM_NPM_DIR") ? std::getenv("TANDEM_NPM_DIR") : std::string(TANDEM_DATA_DIR) + "/npm";
  if (!std::filesystem::exists(npm_dir + "/node_modules/openai")) GTEST_SKIP() << "no openai npm package in " << npm_dir;
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no node";
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  Cluster cluster({"--tokenizer", qwen3_tokenizer(), "--reasoning-parser", "qwen3"});
  cluster.add_worker("both", {"--engine", "fake", "--tokenizer", qwen3_tokenizer(), "--served-model-name", "Qwen/Qwen3-0.6B",
                              "--fake-output", "<think>\nThe user greets me.\n</think>\n\nHello! I am fine."});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  int status = 0;
  const std::string out = shell("node " + std::string(TANDEM_SOURCE_DIR) + "/tests/integration/openai_api_client.mjs http://127.0.0.1:" +
                                    std::to_string(cluster.http_port()) + " " + npm_dir + " 2>&1",
                                &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("openai api client: ok"), std::string::npos) << out;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

// `serve` hands --served-model-name to its workers and --reasoning-parser to its frontend.
TEST(Api, ServePassesServedModelNamesAndTheReasoningParser) {
  ServeProcess serve("api-serve", {"--model", "random:tiny-qwen3", "--engine", "fake", "--num-prefill-workers", "0",
                                   "--child-log-level", "warn", "--reasoning-parser", "deepseek_r1", "--served-model-name",
                                   "Qwen/Qwen3-0.6B", "tiny"});
  const int port = serve.port();
  ASSERT_GT(port, 0);
  ASSERT_TRUE(serve.wait_for_workers(1, 60000)) << serve.log();
  const json models = json::parse(http(port, "GET", "/v1/models").body);
  ASSERT_EQ(models["data"].size(), 2u) << models;
  EXPECT_EQ(models["data"][0]["id"], "Qwen/Qwen3-0.6B");
  EXPECT_EQ(models["data"][1]["id"], "tiny");
  HttpResponse r = http(port, "POST", "/v1/completions", R"({"model":"Qwen/Qwen3-0.6B","prompt":[1,2],"max_tokens":2})",
                        {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(shell("ps -o args= --ppid " + std::to_string(serve.process().pid())).find("--reasoning-parser deepseek_r1"),
            std::string::npos);
  serve.terminate();
}

TEST(Api, UnknownReasoningParserIsRefusedAtStart) {
  char dir_template[] = "/tmp/tandem-api-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  Process frontend({tandem_binary(), "frontend", "--port", "0", "--reasoning-parser", "nope"}, dir + "/frontend.log");
  for (int i = 0; i < 200 && frontend.running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_FALSE(frontend.running());
  EXPECT_NE(frontend.exit_code(), 0);
  EXPECT_NE(shell("cat " + dir + "/frontend.log").find("--reasoning-parser: unknown parser 'nope'"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::testing
