// OpenAI response shaping as pure functions: bodies, stream chunks, logprobs, usage, finish reasons,
// and the error bodies of ApiError's factories, checked against the shapes OpenAI documents.
#include <gtest/gtest.h>

#include "frontend/openai.h"
#include "frontend/openai_responses.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

ResponseContext context(bool chat) {
  ResponseContext ctx;
  ctx.id = chat ? "chatcmpl-1" : "cmpl-1";
  ctx.model = "m";
  ctx.created = 42;
  ctx.chat = chat;
  return ctx;
}

std::string spell(int32_t id) { return id == 1 ? "é" : "t" + std::to_string(id); }

rpc::pb::Output output_with_logprobs() {
  rpc::pb::Output out;
  for (int id : {1, 2}) {
    auto* lp = out.add_logprobs();
    lp->set_token_id(id);
    lp->set_logprob(-0.5f * id);
    auto* top = lp->add_top();
    top->set_token_id(7);
    top->set_logprob(-2.0f);
  }
  return out;
}

TEST(OpenAiResponses, FinishReasonsAndUsage) {
  EXPECT_STREQ(finish_reason_text(rpc::pb::FINISH_STOP), "stop");
  EXPECT_STREQ(finish_reason_text(rpc::pb::FINISH_LENGTH), "length");
  EXPECT_STREQ(finish_reason_text(rpc::pb::FINISH_ABORT), "abort");
  EXPECT_STREQ(finish_reason_text(rpc::pb::FINISH_ERROR), "error");
  EXPECT_STREQ(finish_reason_text(rpc::pb::FINISH_NONE), "");
  EXPECT_EQ(usage_json({3, 4, 0}), json({{"prompt_tokens", 3}, {"completion_tokens", 4}, {"total_tokens", 7}}));
  EXPECT_EQ(usage_json({3, 4, 2})["prompt_tokens_details"], json({{"cached_tokens", 2}}));
}

TEST(OpenAiResponses, SseEvents) {
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_event(std::string("{}")), "data: {}\n\n");
  EXPECT_STREQ(kSseDone, "data: [DONE]\n\n");
}

TEST(OpenAiResponses, CompletionChunkShape) {
  ResponseContext ctx = context(false);
  const std::vector<int32_t> ids = {5};
  json c = stream_chunk(ctx, 0, "hi", nullptr, nullptr, &ids, {});
  EXPECT_EQ(c, json::parse(R"({"id":"cmpl-1","object":"text_completion","created":42,"model":"m",
      "choices":[{"index":0,"text":"hi","logprobs":null,"finish_reason":null,"stop_reason":null}]})"));
  ctx.return_token_ids = true;
  ctx.continuous_usage = true;
  c = stream_chunk(ctx, 1, "", nullptr, "length", &ids, {2, 1, 0});
  EXPECT_EQ(c["choices"][0]["token_ids"], json({5}));
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(c["choices"][0]["index"], 1);
  EXPECT_EQ(c["usage"]["total_tokens"], 3);
}

TEST(OpenAiResponses, ChatChunksAndDeltas) {
  const ResponseContext ctx = context(true);
  json c = stream_chunk(ctx, 0, assistant_role_delta(), nullptr, nullptr, nullptr, {});
  EXPECT_EQ(c, json::parse(R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":42,"model":"m",
      "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})"));
  EXPECT_EQ(stream_delta(true, "x", 1), json({{"content", "x"}}));
  EXPECT_EQ(stream_delta(true, "", 1), json({{"content", ""}}));  // a token whose text is not complete yet
  EXPECT_EQ(stream_delta(true, "", 0), json::object());           // a finish alone
  EXPECT_EQ(stream_delta(false, "", 0), json(""));
  EXPECT_EQ(usage_chunk(ctx, {1, 2, 0}),
            json::parse(R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":42,"model":"m",
                "choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}})"));
}

TEST(OpenAiResponses, WholeBodies) {
  std::vector<ChoiceState> choices(2);
  choices[0].text = "ab";
  choices[0].tokens = {1, 2};
  choices[0].finish_reason = "stop";
  choices[1].text = "c";
  choices[1].finish_reason = "length";
  choices[1].stop_reason = "</s>";
  json chat = response_body(context(true), choices, {2, 3, 0}, /*with_logprobs=*/false);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0], json::parse(R"({"index":0,"message":{"role":"assistant","content":"ab"},
      "logprobs":null,"finish_reason":"stop"})"));
  EXPECT_EQ(chat["usage"]["total_tokens"], 5);

  ResponseContext ctx = context(false);
  ctx.return_token_ids = true;
  json completion = response_body(ctx, choices, {2, 3, 0}, /*with_logprobs=*/true);
  EXPECT_EQ(completion["object"], "text_completion");
  EXPECT_EQ(completion["choices"][0]["stop_reason"], nullptr);
  EXPECT_EQ(completion["choices"][1]["stop_reason"], "</s>");
  EXPECT_EQ(completion["choices"][0]["token_ids"], json({1, 2}));
  EXPECT_EQ(completion["choices"][0]["logprobs"],
            json::parse(R"({"tokens":[],"token_logprobs":[],"top_logprobs":[],"text_offset":[]})"));
}

TEST(OpenAiResponses, ChatLogprobsCarryTokenBytesAndAlternatives) {
  ChoiceState choice;
  json lp = new_logprobs(true, output_with_logprobs(), choice, /*accumulate=*/true, spell);
  ASSERT_EQ(lp["content"].size(), 2u);
  EXPECT_EQ(lp["content"][0]["token"], "é");
  EXPECT_EQ(lp["content"][0]["bytes"], json({0xc3, 0xa9}));
  EXPECT_FLOAT_EQ(lp["content"][1]["logprob"].get<float>(), -1.0f);
  EXPECT_EQ(lp["content"][1]["top_logprobs"][0]["token"], "t7");
  EXPECT_EQ(choice.logprobs_content, lp["content"]);
  ChoiceState streamed;
  new_logprobs(true, output_with_logprobs(), streamed, /*accumulate=*/false, spell);
  EXPECT_TRUE(streamed.logprobs_content.empty());
}

TEST(OpenAiResponses, CompletionLogprobsOffsetsRunAcrossOutputs) {
  ChoiceState choice;
  json first = new_logprobs(false, output_with_logprobs(), choice, /*accumulate=*/true, spell);
  EXPECT_EQ(first["tokens"], json({"é", "t2"}));
  EXPECT_EQ(first["text_offset"], json({0, 2}));  // "é" is two bytes
  EXPECT_EQ(first["top_logprobs"][0], json({{"t7", -2.0}}));
  json second = new_logprobs(false, output_with_logprobs(), choice, /*accumulate=*/false, spell);
  EXPECT_EQ(second["text_offset"], json({4, 6}));
  EXPECT_EQ(choice.completion_logprobs["tokens"].size(), 2u);  // only the accumulated output
  EXPECT_EQ(choice.text_offset, 8);
}

TEST(ApiErrors, FactoriesGiveStatusTypeAndParam) {
  auto body = [](const ApiError& e) { return json::parse(error_body(e))["error"]; };
  EXPECT_EQ(body(ApiError::bad_request("m", "p")),
            json::parse(R"({"message":"m","type":"invalid_request_error","param":"p","code":400})"));
  EXPECT_EQ(body(ApiError::bad_request("m"))["param"], nullptr);
  EXPECT_EQ(body(ApiError::unauthorized("m"))["code"], 401);
  EXPECT_EQ(body(ApiError::forbidden("m"))["code"], 403);
  EXPECT_EQ(body(ApiError::not_found("m", "model"))["type"], "not_found_error");
  EXPECT_EQ(body(ApiError::method_not_allowed("m"))["code"], 405);
  EXPECT_EQ(body(ApiError::too_large("m", "prompt"))["type"], "invalid_request_error");
  EXPECT_EQ(body(ApiError::unavailable("m"))["type"], "service_unavailable_error");
  EXPECT_EQ(body(ApiError::timeout("m"))["type"], "timeout_error");
  EXPECT_EQ(ApiError::from_code(StatusCode::kInternal, "x").status, 500);
  EXPECT_EQ(ApiError::from_code(StatusCode::kUnavailable, "x").status, 503);
  EXPECT_EQ(api_error(Status::DeadlineExceeded("late")).status, 504);
}

}  // namespace
}  // namespace tandem::frontend
