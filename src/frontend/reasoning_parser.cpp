// The think-block splitter behind --reasoning-parser (see reasoning_parser.h).
#include "frontend/reasoning_parser.h"

#include <algorithm>

namespace tandem::frontend {
namespace {

constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

// The length of the longest end of `text` that is a proper beginning of `tag` (0 if none): text that
// the next piece may complete into the tag.
size_t partial_tag_suffix(std::string_view text, std::string_view tag) {
  for (size_t k = std::min(tag.size() - 1, text.size()); k > 0; --k) {
    if (tag.substr(0, k) == text.substr(text.size() - k)) return k;
  }
  return 0;
}

}  // namespace

std::optional<ReasoningFormat> parse_reasoning_format(const std::string& name) {
  if (name.empty()) return ReasoningFormat::kNone;
  if (name == "qwen3") return ReasoningFormat::kQwen3;
  if (name == "deepseek_r1") return ReasoningFormat::kDeepSeekR1;
  return std::nullopt;
}

bool prompt_opens_think(std::string_view prompt) {
  const size_t open = prompt.rfind(kOpen);
  if (open == std::string_view::npos) return false;
  const size_t close = prompt.rfind(kClose);
  return close == std::string_view::npos || close < open;
}

ReasoningParser::ReasoningParser(ReasoningFormat format, bool prompt_open) : format_(format) {
  const bool inside = format == ReasoningFormat::kDeepSeekR1 || (format == ReasoningFormat::kQwen3 && prompt_open);
  state_ = inside ? State::kThinking : State::kAnswerBefore;
  at_start_ = inside;
}

void ReasoningParser::emit(std::string_view text, ReasoningSplit* out) const {
  (state_ == State::kThinking ? out->reasoning : out->content).append(text);
}

ReasoningSplit ReasoningParser::feed(std::string_view text) {
  ReasoningSplit out;
  if (format_ == ReasoningFormat::kNone) {
    out.content.assign(text);
    return out;
  }
  const std::string buffer = held_ + std::string(text);
  held_.clear();
  std::string_view rest = buffer;
  if (at_start_) {
    // A block opened by the prompt: a model that writes <think> itself anyway must not show it.
    if (rest.size() < kOpen.size() && kOpen.substr(0, rest.size()) == rest) {
      held_.assign(rest);
      return out;
    }
    if (rest.substr(0, kOpen.size()) == kOpen) rest.remove_prefix(kOpen.size());
    at_start_ = false;
  }
  while (!rest.empty()) {
    if (state_ == State::kAnswerAfter) {
      out.content.append(rest);
      break;
    }
    const std::string_view tag = state_ == State::kAnswerBefore ? kOpen : kClose;
    const size_t at = rest.find(tag);
    if (at != std::string_view::npos) {
      emit(rest.substr(0, at), &out);
      rest.remove_prefix(at + tag.size());
      state_ = state_ == State::kAnswerBefore ? State::kThinking : State::kAnswerAfter;
      continue;
    }
    const size_t keep = partial_tag_suffix(rest, tag);
    emit(rest.substr(0, rest.size() - keep), &out);
    held_.assign(rest.substr(rest.size() - keep));
    break;
  }
  return out;
}

ReasoningSplit ReasoningParser::finish() {
  ReasoningSplit out;
  emit(held_, &out);
  held_.clear();
  at_start_ = false;
  return out;
}

ReasoningSplit ReasoningParser::split(ReasoningFormat format, std::string_view text, bool prompt_open) {
  ReasoningParser parser(format, prompt_open);
  ReasoningSplit out = parser.feed(text);
  ReasoningSplit rest = parser.finish();
  out.reasoning += rest.reasoning;
  out.content += rest.content;
  return out;
}

}  // namespace tandem::frontend
