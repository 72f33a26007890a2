// Splitting a reasoning model's output into its think block and its answer (vLLM's
// --reasoning-parser): the text inside <think>...</think> becomes the chat reply's
// `reasoning_content`, the rest its `content`. Works on streamed text pieces: a piece that ends with
// what may be the start of a tag (e.g. "</thi") holds that part back until the next piece tells.
//
// Formats (vLLM's names):
//   qwen3        the output is answer text until a <think> opens; a prompt that already ends inside an
//                open think block (a template that opens it, as Qwen3's 2507 thinking models do)
//                starts in it. With enable_thinking=false Qwen3's template closes the block in the
//                prompt, so the output is all answer.
//   deepseek_r1  the output starts inside the think block (R1's template opens <think> in the prompt;
//                a <think> the model writes at the very start anyway is dropped) until </think>.
// Only the first think block is split out; any tag after it is answer text. A think block still open
// when the output ends (max_tokens) is all reasoning. The tags themselves appear in neither part.
//
// Thread-safety: none; one parser per choice of one request, used on one thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tandem::frontend {

enum class ReasoningFormat { kNone, kQwen3, kDeepSeekR1 };

// "qwen3" or "deepseek_r1" ("" = kNone); nullopt for any other name.
std::optional<ReasoningFormat> parse_reasoning_format(const std::string& name);

// True when `prompt` ends inside an open think block: its last <think> comes after its last </think>.
bool prompt_opens_think(std::string_view prompt);

struct ReasoningSplit {
  std::string reasoning;
  std::string content;
};

class ReasoningParser {
 public:
  // `prompt_open`: the rendered prompt ends inside a think block (prompt_opens_think); deepseek_r1
  // starts inside one whatever the prompt.
  explicit ReasoningParser(ReasoningFormat format, bool prompt_open = false);

  // The next piece of output text; returns what can be shown now.
  ReasoningSplit feed(std::string_view text);
  // The output ended: returns the text held back (it was not a tag after all).
  ReasoningSplit finish();

  // The whole output at once (feed, then finish).
  static ReasoningSplit split(ReasoningFormat format, std::string_view text, bool prompt_open = false);

 private:
  enum class State { kAnswerBefore, kThinking, kAnswerAfter };

  // Appends `text` to the part the current state writes to.
  void emit(std::string_view text, ReasoningSplit* out) const;

  ReasoningFormat format_;
  State state_;
  bool at_start_;     // nothing read yet in a block opened before the output: a leading <think> is dropped
  std::string held_;  // the end of the text read so far that may begin a tag
};

}  // namespace tandem::frontend
