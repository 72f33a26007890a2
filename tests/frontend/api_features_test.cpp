// Issue 21's API features at the frontend, against a fake worker directory: batched completions
// prompts (one internal request per prompt, choices merged in vLLM's order, usage summed, one error
// or one client leaving ends every part), chat replies split by a reasoning parser (whole and
// streamed), chat_template_kwargs reaching the template, and served model names with aliases.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "fakes.h"
#include "frontend/request_lifecycle.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;
using testing::ByteCodec;
using testing::FakeDirectory;
using testing::FakeExchange;

// Keeps the template variables it was given; renders like ByteCodec plus a marker for a
// false enable_thinking, so the prompt's length shows the variable arrived.
class KwargsCodec : public ByteCodec {
 public:
  StatusOr<std::string> render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools, bool agp,
                                    const json& kwargs) const override {
    last_kwargs = kwargs;
    auto text = ByteCodec::render_chat(messages, tools, agp, kwargs);
    if (text.ok() && kwargs.value("enable_thinking", true) == false) return *text + "<think></think>";
    return text;
  }
  mutable json last_kwargs;
};

class ApiFeaturesTest : public testing::LifecycleFixture<KwargsCodec> {
 protected:
  ApiFeaturesTest() {
    options_.request_timeout_ms = 1000;
    worker_ = directory_.add("w1", rpc::pb::ROLE_BOTH, /*max_model_len=*/1000);
  }
  // The generate requests the worker got, in order.
  std::vector<rpc::pb::Generate> generates() {
    std::vector<rpc::pb::Generate> out;
    for (const auto& env : directory_.workers[worker_].sent) {
      if (env.has_generate()) out.push_back(env.generate());
    }
    return out;
  }
  std::vector<std::string> aborted() {
    std::vector<std::string> out;
    for (const auto& env : directory_.workers[worker_].sent) {
      if (env.has_abort()) out.push_back(env.abort().request_id());
    }
    return out;
  }
  void output(const std::string& id, int index, std::vector<int32_t> tokens, const std::string& text,
              bool finished = false) {
    rpc::pb::Output out;
    out.set_request_id(id);
    out.set_index(index);
    for (int32_t t : tokens) out.add_token_ids(t);
    out.set_text(text);
    if (finished) {
      out.set_finished(true);
      out.set_finish_reason(rpc::pb::FINISH_LENGTH);
    }
    lifecycle().on_output(worker_, out);
  }
  static std::vector<json> data_events(const FakeExchange& ex) {
    std::vector<json> out;
    for (const auto& e : ex.events) {
      if (e.rfind("data: {", 0) == 0) out.push_back(json::parse(e.substr(6)));
    }
    return out;
  }

  WorkerKey worker_ = 0;
};

TEST(BatchShaping, ChoiceIndexIsPromptTimesNPlusChoice) {
  EXPECT_EQ(batch_choice_index(0, 2, 0), 0);
  EXPECT_EQ(batch_choice_index(0, 2, 1), 1);
  EXPECT_EQ(batch_choice_index(1, 2, 0), 2);
  EXPECT_EQ(batch_choice_index(2, 2, 1), 5);
  EXPECT_EQ(batch_choice_index(3, 1, 0), 3);
  TokenUsage a{3, 4, 1}, b{5, 6, 0};
  TokenUsage sum = sum_usage({a, b});
  EXPECT_EQ(sum.prompt_tokens, 8);
  EXPECT_EQ(sum.completion_tokens, 10);
  EXPECT_EQ(sum.cached_prompt_tokens, 1);
}

// Three prompts (text and token ids alike), n = 2: three requests go out; their outputs arrive in any
// order; the body has six choices at prompt * 2 + choice, and usage summed over the prompts.
TEST_F(ApiFeaturesTest, BatchedPromptsAreAnsweredAsOneBodyInVllmOrder) {
  auto ex = start(R"({"prompt":["ab","cde","f"],"n":2,"max_tokens":3})");
  const auto sent = generates();
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].prompt_token_ids_size(), 2);
  EXPECT_EQ(sent[1].prompt_token_ids_size(), 3);
  EXPECT_EQ(sent[2].prompt_token_ids_size(), 1);
  for (const auto& g : sent) EXPECT_EQ(g.sampling().n(), 2);
  EXPECT_EQ(lifecycle().num_active(), 3u);
  // Backwards: the last prompt completes first.
  for (int p = 2; p >= 0; --p) {
    for (int c = 1; c >= 0; --c) {
      output(sent[p].request_id(), c, {1, 2}, "p" + std::to_string(p) + "c" + std::to_string(c), /*finished=*/true);
    }
    EXPECT_EQ(ex->ended, p == 0);
  }
  ASSERT_EQ(ex->status, 200);
  const json body = ex->json_body();
  EXPECT_EQ(body["id"], "cmpl-" + sent[0].request_id());
  ASSERT_EQ(body["choices"].size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_EQ(body["choices"][i]["text"], "p" + std::to_string(i / 2) + "c" + std::to_string(i % 2));
    EXPECT_EQ(body["choices"][i]["finish_reason"], "length");
  }
  EXPECT_EQ(body["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(body["usage"]["completion_tokens"], 12);
  EXPECT_EQ(body["usage"]["total_tokens"], 18);
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[worker_].outstanding, 0);
  EXPECT_TRUE(aborted().empty());
}

TEST_F(ApiFeaturesTest, BatchedPromptsStreamEveryChoiceAtItsIndexThenOneUsageAndDone) {
  auto ex = start(R"({"prompt":[[1,2],[3],[4,5,6]],"n":2,"max_tokens":2,"stream":true,
                      "stream_options":{"include_usage":true}})");
  const auto sent = generates();
  ASSERT_EQ(sent.size(), 3u);
  output(sent[1].request_id(), 1, {7}, "x");
  output(sent[2].request_id(), 0, {7}, "y");
  for (int p = 0; p < 3; ++p) {
    for (int c = 0; c < 2; ++c) output(sent[p].request_id(), c, {8}, "z", /*finished=*/true);
    if (p < 2) {
      EXPECT_FALSE(ex->ended);
    }
  }
  ASSERT_TRUE(ex->ended);
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
  const auto events = data_events(*ex);
  ASSERT_EQ(events.size(), 2u + 6u + 1u);
  EXPECT_EQ(events[0]["choices"][0]["index"], 3);  // prompt 1, choice 1
  EXPECT_EQ(events[1]["choices"][0]["index"], 4);  // prompt 2, choice 0
  std::set<int> finished;
  for (size_t i = 2; i < 8; ++i) {
    EXPECT_EQ(events[i]["id"], "cmpl-" + sent[0].request_id());
    finished.insert(events[i]["choices"][0]["index"].get<int>());
  }
  EXPECT_EQ(finished, (std::set<int>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(events.back()["choices"].empty());
  EXPECT_EQ(events.back()["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 8);
}

TEST_F(ApiFeaturesTest, OneFailingPartEndsTheBatchAndAbortsTheOthers) {
  auto ex = start(R"({"prompt":[[1],[2],[3]],"max_tokens":2,"stream":true})");
  const auto sent = generates();
  ASSERT_EQ(sent.size(), 3u);
  output(sent[0].request_id(), 0, {7}, "a");
  rpc::pb::Output error;
  error.set_request_id(sent[1].request_id());
  error.set_finished(true);
  error.set_finish_reason(rpc::pb::FINISH_ERROR);
  error.set_error_code(static_cast<int32_t>(StatusCode::kInvalidArgument));
  error.set_error_message("bad");
  lifecycle().on_output(worker_, error);
  EXPECT_TRUE(ex->ended);
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
  EXPECT_NE(ex->events[ex->events.size() - 2].find("\"error\""), std::string::npos);
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[worker_].outstanding, 0);
  const auto aborts = aborted();
  EXPECT_EQ(std::set<std::string>(aborts.begin(), aborts.end()),
            (std::set<std::string>{sent[0].request_id(), sent[1].request_id(), sent[2].request_id()}));
  // Late outputs of aborted parts are dropped.
  output(sent[2].request_id(), 0, {7}, "late", true);
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
}

TEST_F(ApiFeaturesTest, ClientLeavingAbortsEveryPartAndATimeoutFailsTheBatchOnce) {
  auto ex = start(R"({"prompt":["a","b"],"max_tokens":2})");
  ASSERT_EQ(generates().size(), 2u);
  ex->leave();
  EXPECT_EQ(aborted().size(), 2u);
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[worker_].outstanding, 0);

  auto ex2 = start(R"({"prompt":["a","b","c"],"max_tokens":2})");
  lifecycle().expire_stalled(Clock::now() + std::chrono::seconds(5));
  EXPECT_EQ(ex2->status, 504);
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(aborted().size(), 5u);
}

TEST_F(ApiFeaturesTest, BatchedPromptErrorsNameThePrompt) {
  EXPECT_EQ(start(R"({"prompt":[]})")->status, 400);
  // A prompt over the context (checked against the worker routed to) is refused; the parts already
  // sent are aborted.
  std::string ids;
  for (int i = 0; i < 1200; ++i) ids += (i ? "," : "") + std::to_string(i + 1);
  const size_t before = generates().size();
  auto over = start(R"({"prompt":[[1,2],[)" + ids + R"(]],"max_tokens":1})");
  EXPECT_EQ(over->status, 413);
  EXPECT_EQ(json::parse(over->body)["error"]["param"], "prompt");
  const size_t sent_now = generates().size() - before;
  EXPECT_EQ(sent_now, 1u);                              // the first part was sent, then aborted
  EXPECT_EQ(aborted().back(), generates().back().request_id());
}

TEST_F(ApiFeaturesTest, ReasoningParserSplitsAWholeChatReply) {
  options_.reasoning = ReasoningFormat::kQwen3;
  auto ex = start(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":9})", /*chat=*/true);
  const auto id = generates().back().request_id();
  output(id, 0, {1}, "<thi");
  output(id, 0, {2}, "nk>why</th");
  output(id, 0, {3}, "ink>ans", /*finished=*/true);
  const json body = ex->json_body();
  EXPECT_EQ(body["choices"][0]["message"]["reasoning_content"], "why");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "ans");
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
}

TEST_F(ApiFeaturesTest, ReasoningParserStreamsReasoningThenContentDeltas) {
  options_.reasoning = ReasoningFormat::kDeepSeekR1;
  auto ex = start(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":9,"stream":true})", /*chat=*/true);
  const auto id = generates().back().request_id();
  output(id, 0, {1}, "r1 </thi");
  output(id, 0, {2}, "nk>c1");
  output(id, 0, {3}, " <", /*finished=*/true);
  const auto events = data_events(*ex);
  ASSERT_EQ(events.size(), 4u);  // role, three outputs
  EXPECT_EQ(events[1]["choices"][0]["delta"], json({{"reasoning_content", "r1 "}}));
  EXPECT_EQ(events[2]["choices"][0]["delta"], json({{"content", "c1"}}));
  EXPECT_EQ(events[3]["choices"][0]["delta"], json({{"content", " <"}}));
  EXPECT_EQ(events[3]["choices"][0]["finish_reason"], "length");
}

TEST_F(ApiFeaturesTest, WithoutAReasoningParserTheThinkBlockStaysInContent) {
  auto ex = start(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":9})", /*chat=*/true);
  output(generates().back().request_id(), 0, {1}, "<think>x</think>y", true);
  const json message = ex->json_body()["choices"][0]["message"];
  EXPECT_EQ(message["content"], "<think>x</think>y");
  EXPECT_FALSE(message.contains("reasoning_content"));
}

TEST_F(ApiFeaturesTest, ChatTemplateKwargsReachTheTemplate) {
  start(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1,
            "chat_template_kwargs":{"enable_thinking":false}})", /*chat=*/true);
  EXPECT_EQ(codec_.last_kwargs, json({{"enable_thinking", false}}));
  EXPECT_EQ(generates().back().prompt_token_ids_size(), 2 + 15);
  start(R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":1})", /*chat=*/true);
  EXPECT_EQ(codec_.last_kwargs, json::object());
  EXPECT_EQ(generates().back().prompt_token_ids_size(), 2);
}

// chat_template_kwargs through the real codec and Qwen3's own template, against jinja2's renders
// (tests/data/tokenizer/chat, made by tools/references/chat_template_references.py).
TEST(ChatTemplateKwargs, ReachQwen3sTemplateAsJinja2RendersThem) {
  const std::string dir = std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3";
  if (!std::filesystem::exists(dir + "/tokenizer.json")) GTEST_SKIP() << "no tokenizer data";
  auto codec = load_prompt_codec(dir);
  std::ifstream in(std::string(TANDEM_TEST_DATA_DIR) + "/tokenizer/chat/qwen3_cases.json");
  const json cases = json::parse(in)["cases"];
  int checked = 0;
  for (const auto& c : cases) {
    const json& inputs = c["inputs"];
    // Tool calls are another part's (their arguments' key order needs ordered JSON end to end).
    if (!inputs.contains("extra") || inputs.contains("tools") || inputs.dump().find("tool_calls") != std::string::npos) {
      continue;
    }
    auto text = codec->render_chat(inputs["messages"], nullptr, inputs.value("add_generation_prompt", false), inputs["extra"]);
    ASSERT_TRUE(text.ok()) << c["name"] << ": " << text.status().message();
    EXPECT_EQ(*text, c["expected"].get<std::string>()) << c["name"];
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(ServedModelNames, FrontendNamesOverrideAndWorkerAliasesAreListed) {
  FakeDirectory directory;
  const WorkerKey w = directory.add("w1", rpc::pb::ROLE_BOTH, 100, 0, "Qwen3-0.6B");
  directory.workers[w].info.add_model_aliases("Qwen/Qwen3-0.6B");
  directory.add("p1", rpc::pb::ROLE_PREFILL, 100, 0, "prefill-only");
  EXPECT_EQ(served_models(directory, {}), (std::vector<std::string>{"Qwen/Qwen3-0.6B", "Qwen3-0.6B"}));
  EXPECT_EQ(served_models(directory, {"b", "a", "b"}), (std::vector<std::string>{"b", "a"}));
  EXPECT_TRUE(serves_model(directory.workers[w].info, "Qwen/Qwen3-0.6B"));
  EXPECT_TRUE(serves_model(directory.workers[w].info, "Qwen3-0.6B"));
  EXPECT_FALSE(serves_model(directory.workers[w].info, "qwen"));
}

}  // namespace
}  // namespace tandem::frontend
