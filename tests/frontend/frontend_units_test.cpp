// Frontend logic without processes: OpenAI request validation, the router's decisions, the prefix
// index, and Prometheus rendering.
#include <gtest/gtest.h>

#include "frontend/metrics.h"
#include "frontend/openai.h"
#include "frontend/router.h"

namespace tandem::frontend {
namespace {

std::optional<ApiError> parse(const std::string& body, bool chat = false) {
  GenerationRequest r;
  return parse_generation_request(body, chat, &r);
}

TEST(OpenAiParse, AcceptsOpenAiAndVllmParameters) {
  GenerationRequest r;
  auto error = parse_generation_request(
      R"({"model":"m","prompt":"hi","max_tokens":7,"temperature":0.5,"top_p":0.9,"top_k":40,"min_p":0.1,
          "repetition_penalty":1.1,"presence_penalty":0.5,"frequency_penalty":-0.5,"seed":3,"n":2,"stop":["a","b"],
          "stop_token_ids":[5],"ignore_eos":true,"min_tokens":2,"logprobs":3,"logit_bias":{"17":-100},
          "stream":true,"stream_options":{"include_usage":true}})",
      false, &r);
  ASSERT_FALSE(error) << error->message;
  EXPECT_EQ(*r.prompt_text, "hi");
  EXPECT_EQ(r.sampling.max_tokens(), 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature(), 0.5f);
  EXPECT_EQ(r.sampling.top_k(), 40);
  EXPECT_EQ(r.sampling.n(), 2);
  EXPECT_EQ(r.sampling.stop_size(), 2);
  EXPECT_EQ(r.sampling.stop_token_ids(0), 5);
  EXPECT_TRUE(r.sampling.ignore_eos());
  EXPECT_EQ(r.sampling.min_tokens(), 2);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_EQ(r.sampling.logit_bias_ids(0), 17);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.sampling.has_seed());
}

TEST(OpenAiParse, TokenIdPromptsAndChatContentParts) {
  GenerationRequest ids;
  ASSERT_FALSE(parse_generation_request(R"({"prompt":[1,2,3]})", false, &ids));
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  GenerationRequest chat;
  ASSERT_FALSE(parse_generation_request(
      R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"logprobs":true,"top_logprobs":2})",
      true, &chat));
  EXPECT_EQ(chat.messages[0]["content"], "ab");
  EXPECT_EQ(chat.top_logprobs, 2);
}

TEST(OpenAiParse, HarmlessFormsOfUnsupportedFeaturesPass) {
  for (const char* body : {
           R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}})",
           R"({"messages":[{"role":"user","content":"x"}],"response_format":null,"tools":null,"tool_choice":null})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[]})",
           R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"})",
           R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"auto"})",
       }) {
    auto error = parse(body, /*chat=*/true);
    EXPECT_FALSE(error) << body << ": " << (error ? error->message : "");
  }
}

TEST(OpenAiParse, ErrorsNameTheParameter) {
  struct Case {
    const char* body;
    bool chat;
    const char* param;
  } cases[] = {
      {R"({"prompt":"x","max_tokens":-1})", false, "max_tokens"},
      {R"({"prompt":"x","max_tokens":1.5})", false, "max_tokens"},
      {R"({"prompt":"x","temperature":3})", false, "temperature"},
      {R"({"prompt":"x","top_p":0})", false, "top_p"},
      {R"({"prompt":"x","n":0})", false, "n"},
      {R"({"prompt":"x","stop":[1]})", false, "stop"},
      {R"({"prompt":"x","logprobs":21})", false, "logprobs"},
      {R"({"prompt":"x","stream_options":{"include_usage":true}})", false, "stream_options"},
      {R"({"prompt":5})", false, "prompt"},
      // A list of prompts is served (issue 21); an empty or mixed list is not.
      {R"({"prompt":[]})", false, "prompt"},
      {R"({"prompt":["a",[1,2]]})", false, "prompt"},
      {R"({"prompt":[[1,2],[]]})", false, "prompt"},
      {R"({"prompt":["a",""]})", false, "prompt"},
      {R"({"messages":[{"role":"user","content":"x"}],"chat_template_kwargs":[1]})", true, "chat_template_kwargs"},
      {R"({"prompt":"x","model":3})", false, "model"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", true, "messages[0].role"},
      {R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", true, "top_logprobs"},
      {R"({})", true, "messages"},
      // Structured output and tool calls would silently come back as free text if ignored; structured
      // output is served (issue 21), but not in a form it cannot enforce.
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}})", true, "response_format"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{}}})", true,
       "response_format"},
      {R"({"prompt":"x","response_format":"json"})", false, "response_format"},
      {R"({"prompt":"x","guided_json":{"type":"object","minProperties":1}})", false, "guided_json"},
      {R"({"messages":[{"role":"user","content":"x"}],"guided_choice":["a",2]})", true, "guided_choice"},
      {R"({"prompt":"x","guided_grammar":"root ::= \"a\""})", false, "guided_grammar"},
      // Tools themselves parse now (issue 21, tool calling); without --tool-call-parser the lifecycle
      // answers them 400 naming 'tools' (tool_calls_test.cpp, ToolsNeedTheParserFlag).
      {R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"required"})", true, "tool_choice"},
      {R"({"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"f"}}})", true,
       "tool_choice"},
      {R"({"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]})", true, "functions"},
  };
  for (const auto& c : cases) {
    auto error = parse(c.body, c.chat);
    ASSERT_TRUE(error) << c.body;
    EXPECT_EQ(error->status, 400) << c.body;
    EXPECT_EQ(error->param, c.param) << c.body << ": " << error->message;
  }
  auto bad_json = parse("{nope");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  EXPECT_NE(error_body(*bad_json).find("\"invalid_request_error\""), std::string::npos);
}

Candidate decoder(int outstanding, int overlap = 0) {
  Candidate c;
  c.can_decode = true;
  c.outstanding = outstanding;
  c.overlap_tokens = overlap;
  return c;
}
Candidate prefiller(int outstanding) {
  Candidate c;
  c.is_prefill = true;
  c.prefills_outstanding = outstanding;
  return c;
}

TEST(Router, LeastLoadedPicksLeastOutstandingDecodeWorkerThenLargestOverlap) {
  RouterOptions least_loaded;
  least_loaded.mode = RouterMode::kLeastLoaded;
  std::vector<Candidate> c = {decoder(3), decoder(1), decoder(1, 64)};
  Decision d = route(c, 100, 0, true, least_loaded);
  EXPECT_EQ(d.decode, 2);
  EXPECT_EQ(d.uncached_tokens, 36);
  c[0].outstanding = 0;
  EXPECT_EQ(route(c, 100, 0, true, least_loaded).decode, 0);
}

TEST(Router, OptionsDefaultToKvModeAsTheFlagDoes) {
  EXPECT_EQ(RouterOptions{}.mode, RouterMode::kKv);
  EXPECT_EQ(parse_router_mode("kv"), RouterOptions{}.mode);
}

TEST(Router, ConditionalDisaggregationAsDesignSection2) {
  RouterOptions o;  // 1000 / 2
  std::vector<Candidate> c = {decoder(0), prefiller(1), prefiller(0)};
  Decision remote = route(c, 1001, 1, true, o);
  EXPECT_TRUE(remote.remote);
  EXPECT_EQ(remote.reason, "long_prompt");
  EXPECT_EQ(remote.prefill, 2);  // the least loaded prefill worker
  EXPECT_EQ(route(c, 1000, 0, true, o).reason, "short_prompt");
  EXPECT_EQ(route(c, 5000, 2, true, o).reason, "prefill_queue_full");
  EXPECT_EQ(route(c, 5000, 0, false, o).reason, "not_disaggregable");
  std::vector<Candidate> alone = {decoder(0)};
  EXPECT_EQ(route(alone, 5000, 0, true, o).reason, "no_prefill_worker");
  // The prefix cache counts: 1100 tokens with 512 cached leave 588 uncached -> local.
  std::vector<Candidate> cached = {decoder(0, 512), prefiller(0)};
  Decision d = route(cached, 1100, 0, true, o);
  EXPECT_FALSE(d.remote);
  EXPECT_EQ(d.uncached_tokens, 588);
  std::vector<Candidate> none = {prefiller(0)};
  EXPECT_EQ(route(none, 10, 0, true, o).decode, -1);
}

TEST(PrefixIndex, CountsWholeLeadingBlocksOnly) {
  PrefixIndex index(4);
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  index.insert(a);
  EXPECT_EQ(index.overlap(a), 8);
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 7, 0, 9};
  EXPECT_EQ(index.overlap(b), 4);
  std::vector<int32_t> c = {0, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(index.overlap(c), 0);
}

TEST(Metrics, RendersPrometheusText) {
  Metrics m;
  m.describe("tandem_x_total", "counter", "X.");
  m.add("tandem_x_total", labels({{"reason", "a\"b"}}), 2);
  Histogram& h = m.histogram("lat_seconds", "", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  std::string text = m.render();
  EXPECT_NE(text.find("# TYPE tandem_x_total counter"), std::string::npos);
  EXPECT_NE(text.find("tandem_x_total{reason=\"a\\\"b\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count 3"), std::string::npos) << text;
}

}  // namespace
}  // namespace tandem::frontend
