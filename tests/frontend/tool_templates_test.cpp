// Chat requests with tools, tool calls and tool results, parsed as the frontend parses them and
// rendered by the real Qwen3 and Llama-3.1 templates (data/tokenizers), against python3 jinja2's
// render of the conversation vLLM makes of the same request (tests/data/tokenizer/chat/*_requests_cases.json,
// made by tools/references/chat_template_references.py). Byte-identical prompts.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "frontend/openai.h"
#include "frontend/prompt_codec.h"

namespace tandem::frontend {
namespace {

using nlohmann::ordered_json;

class ToolTemplateReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ToolTemplateReferenceTest, RequestsRenderAsJinja2RendersVllmsConversation) {
  const std::string dir = std::string(TANDEM_DATA_DIR) + "/tokenizers/" + GetParam();
  if (!std::filesystem::exists(dir + "/tokenizer.json")) GTEST_SKIP() << "no tokenizer data";
  auto codec = load_prompt_codec(dir);
  std::ifstream in(std::string(TANDEM_TEST_DATA_DIR) + "/tokenizer/chat/" + GetParam() + "_requests_cases.json");
  ASSERT_TRUE(in) << "missing fixture";
  const ordered_json suite = ordered_json::parse(in);
  int rendered = 0;
  for (const auto& c : suite["cases"]) {
    const std::string name = c["name"].get<std::string>();
    GenerationRequest req;
    auto error = parse_generation_request(c["request"].dump(), /*chat=*/true, &req);
    ASSERT_FALSE(error) << name << ": " << error->message;
    auto text = codec->render_chat(req.messages, req.tools.template_tools(), req.add_generation_prompt,
                                   req.chat_template_kwargs);
    if (c.contains("error")) {
      EXPECT_FALSE(text.ok()) << name << ": jinja2 raised " << c["error"];
      continue;
    }
    ASSERT_TRUE(text.ok()) << name << ": " << text.status().message();
    EXPECT_EQ(*text, c["expected"].get<std::string>()) << name;
    ++rendered;
  }
  EXPECT_GE(rendered, 10);
}

INSTANTIATE_TEST_SUITE_P(Models, ToolTemplateReferenceTest, ::testing::Values("qwen3", "llama3_1"));

}  // namespace
}  // namespace tandem::frontend
