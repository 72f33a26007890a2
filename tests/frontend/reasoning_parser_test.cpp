// The think-block splitter (frontend/reasoning_parser.h): whole texts, every way of streaming them
// in two pieces or one character at a time (the streamed parts must join to the whole-text split),
// deepseek_r1's block opened by the prompt, outputs without tags, and a block cut by max_tokens.
#include <gtest/gtest.h>

#include "frontend/reasoning_parser.h"

namespace tandem::frontend {
namespace {

ReasoningSplit stream(ReasoningFormat format, const std::vector<std::string>& pieces, bool prompt_open = false) {
  ReasoningParser parser(format, prompt_open);
  ReasoningSplit out;
  for (const auto& piece : pieces) {
    ReasoningSplit part = parser.feed(piece);
    out.reasoning += part.reasoning;
    out.content += part.content;
  }
  ReasoningSplit last = parser.finish();
  out.reasoning += last.reasoning;
  out.content += last.content;
  return out;
}

// Every split of `text` into two pieces, and one character at a time, gives `reasoning`/`content`.
void expect_every_streaming(ReasoningFormat format, const std::string& text, const std::string& reasoning,
                            const std::string& content, bool prompt_open = false) {
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    ReasoningSplit s = stream(format, {text.substr(0, cut), text.substr(cut)}, prompt_open);
    EXPECT_EQ(s.reasoning, reasoning) << "split at " << cut << " of " << text;
    EXPECT_EQ(s.content, content) << "split at " << cut << " of " << text;
  }
  std::vector<std::string> chars;
  for (char ch : text) chars.emplace_back(1, ch);
  ReasoningSplit s = stream(format, chars, prompt_open);
  EXPECT_EQ(s.reasoning, reasoning) << "one character at a time: " << text;
  EXPECT_EQ(s.content, content) << "one character at a time: " << text;
}

TEST(ReasoningParser, ParsesFormatNames) {
  EXPECT_EQ(parse_reasoning_format("qwen3"), ReasoningFormat::kQwen3);
  EXPECT_EQ(parse_reasoning_format("deepseek_r1"), ReasoningFormat::kDeepSeekR1);
  EXPECT_EQ(parse_reasoning_format(""), ReasoningFormat::kNone);
  EXPECT_FALSE(parse_reasoning_format("granite").has_value());
}

TEST(ReasoningParser, Qwen3WholeText) {
  auto s = ReasoningParser::split(ReasoningFormat::kQwen3, "<think>\nLet me add.\n</think>\n\nIt is 4.");
  EXPECT_EQ(s.reasoning, "\nLet me add.\n");
  EXPECT_EQ(s.content, "\n\nIt is 4.");
}

TEST(ReasoningParser, Qwen3EverySplitPointAndOneCharacterChunks) {
  expect_every_streaming(ReasoningFormat::kQwen3, "<think>a < b </thin x</think>ok <think> stays", "a < b </thin x",
                         "ok <think> stays");
  expect_every_streaming(ReasoningFormat::kQwen3, "pre<think>r</think>post", "r", "prepost");
}

TEST(ReasoningParser, DeepSeekR1WithoutOpeningTag) {
  const std::string text = "The user asks 2+2.\n</think>\n\n4";
  auto s = ReasoningParser::split(ReasoningFormat::kDeepSeekR1, text);
  EXPECT_EQ(s.reasoning, "The user asks 2+2.\n");
  EXPECT_EQ(s.content, "\n\n4");
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, text, "The user asks 2+2.\n", "\n\n4");
}

TEST(ReasoningParser, DeepSeekR1DropsALeadingOpeningTag) {
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, "<think>hmm</think>yes", "hmm", "yes");
  // Only at the very start: later it is text of the block.
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, "x<think>hmm</think>yes", "x<think>hmm", "yes");
  // A start that looks like the tag but is not.
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, "<thinking></think>", "<thinking>", "");
}

TEST(ReasoningParser, NoTagsAtAll) {
  expect_every_streaming(ReasoningFormat::kQwen3, "Just an answer, 1 < 2.", "", "Just an answer, 1 < 2.");
  // A trailing '<' held back is given back at the end.
  expect_every_streaming(ReasoningFormat::kQwen3, "ends with <thi", "", "ends with <thi");
  expect_every_streaming(ReasoningFormat::kNone, "<think>x</think>y", "", "<think>x</think>y");
}

TEST(ReasoningParser, UnclosedThinkBlockAtMaxTokensIsAllReasoning) {
  expect_every_streaming(ReasoningFormat::kQwen3, "<think>still thinking </thi", "still thinking </thi", "");
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, "still thinking", "still thinking", "");
  expect_every_streaming(ReasoningFormat::kDeepSeekR1, "<thi", "<thi", "");
}

TEST(ReasoningParser, Qwen3PromptThatOpensTheBlock) {
  EXPECT_TRUE(prompt_opens_think("<|im_start|>assistant\n<think>\n"));
  EXPECT_FALSE(prompt_opens_think("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(prompt_opens_think("<|im_start|>assistant\n"));
  expect_every_streaming(ReasoningFormat::kQwen3, "r</think>c", "r", "c", /*prompt_open=*/true);
  expect_every_streaming(ReasoningFormat::kQwen3, "r</think>c", "", "r</think>c", /*prompt_open=*/false);
}

TEST(ReasoningParser, HoldsBackOnlyWhatMayBeATag) {
  ReasoningParser parser(ReasoningFormat::kQwen3);
  auto a = parser.feed("<think>abc</th");
  EXPECT_EQ(a.reasoning, "abc");
  EXPECT_EQ(a.content, "");
  auto b = parser.feed("ink>x");
  EXPECT_EQ(b.reasoning, "");
  EXPECT_EQ(b.content, "x");
  auto c = parser.finish();
  EXPECT_EQ(c.reasoning + c.content, "");
}

}  // namespace
}  // namespace tandem::frontend
