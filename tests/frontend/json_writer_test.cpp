// The tree-free JSON writer against nlohmann's dump(), the reference it must match byte for byte, and
// the stream chunk it writes against sse_event(stream_chunk(...)).
#include <gtest/gtest.h>

#include "frontend/json_writer.h"
#include "frontend/openai_responses.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

std::string written(const json& value) {
  std::string out = "prefix";
  append_json(&out, value);
  return out.substr(6);
}

TEST(JsonWriter, StringsMatchDumpForEveryAsciiByteAndUtf8) {
  std::string every_ascii;
  for (int c = 1; c < 0x80; ++c) every_ascii.push_back(static_cast<char>(c));
  every_ascii.push_back('\0');
  for (const std::string& s : {std::string(), every_ascii, std::string("a\"b\\c\nd\te\rf\bg\fh"),
                               std::string("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF \xEF\xBF\xBD"),
                               std::string("\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xF0\x90\x80\x80")}) {
    EXPECT_EQ(written(json(s)), json(s).dump()) << s;
  }
}

TEST(JsonWriter, InvalidUtf8ThrowsAsDumpDoes) {
  for (const std::string& bad : {std::string("\x80"), std::string("a\xC0\x80"), std::string("\xC1\xBF"),
                                 std::string("\xE0\x80\x80"), std::string("\xED\xA0\x80"), std::string("\xF0\x80\x80\x80"),
                                 std::string("\xF4\x90\x80\x80"), std::string("\xF5\x80\x80\x80"), std::string("\xE4\xB8"),
                                 std::string("\xE4\xB8x"), std::string("\xF0\x9F\x98")}) {
    EXPECT_THROW(json(bad).dump(), json::type_error) << "the reference";
    std::string out;
    EXPECT_THROW(append_json_string(&out, bad), json::type_error);
  }
}

TEST(JsonWriter, ValuesMatchDump) {
  const json values[] = {
      nullptr, true, false, 0, -7, int64_t{1} << 40, 3u, 0.5, -1.25e-7, 1e300,
      json::array(), json::object(), json::array({1, "x", nullptr, json::array({2.5})}),
      json{{"z", 1}, {"a", {{"content", "hi\n"}}}, {"m", json::array({false})}, {"k\"ey", -0.0}},
  };
  for (const json& v : values) EXPECT_EQ(written(v), v.dump()) << v.dump();
}

TEST(JsonWriter, StreamChunkEventMatchesTheTreeDumped) {
  const std::vector<int32_t> ids = {5, 151643};
  const json logprobs = {{"content", json::array({{{"token", "é"}, {"logprob", -0.5}, {"bytes", {195, 169}}}})}};
  const char* reasons[] = {nullptr, "stop", "length", "tool_calls"};
  int cases = 0;
  for (bool chat : {false, true}) {
    for (bool token_ids : {false, true}) {
      for (bool continuous : {false, true}) {
        for (const char* reason : reasons) {
          ResponseContext ctx;
          ctx.id = chat ? "chatcmpl-7\"x" : "cmpl-7";
          ctx.model = "Qwen/Qwen3-0.6B é";
          ctx.created = 1764680000;
          ctx.chat = chat;
          ctx.return_token_ids = token_ids;
          ctx.continuous_usage = continuous;
          for (const json& delta : {stream_delta(chat, "a \"quoted\"\n\xE4\xB8\xAD", 2), stream_delta(chat, "", 0),
                                    assistant_role_delta(), json{{"reasoning_content", "r"}, {"content", "c"}}}) {
            if (!chat && !delta.is_string()) continue;
            for (const json* lp : {static_cast<const json*>(nullptr), &logprobs}) {
              for (const TokenUsage& usage : {TokenUsage{3, 4, 0}, TokenUsage{512, 9, 16}}) {
                EXPECT_EQ(stream_chunk_event(ctx, 3, delta, lp, reason, &ids, usage),
                          sse_event(stream_chunk(ctx, 3, delta, lp, reason, &ids, usage)));
                EXPECT_EQ(stream_chunk_event(ctx, 0, delta, lp, reason, nullptr, usage),
                          sse_event(stream_chunk(ctx, 0, delta, lp, reason, nullptr, usage)));
                ++cases;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(cases, 100);
}

}  // namespace
}  // namespace tandem::frontend
