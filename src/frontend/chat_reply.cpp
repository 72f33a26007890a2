// The chat reply's reasoning and tool-call split, and its deltas (see chat_reply.h).
#include "frontend/chat_reply.h"

#include "frontend/openai_responses.h"

namespace tandem::frontend {

using nlohmann::json;

ChatReplyParser::ChatReplyParser(ReasoningFormat reasoning, bool think_open, ToolParserKind tools, int max_calls,
                                 ToolCallParser::IdFn new_id)
    : reasoning_(reasoning, think_open), tools_(tools, std::move(new_id)), max_calls_(max_calls) {}

ChatPiece ChatReplyParser::feed(std::string_view text, bool last) {
  ReasoningSplit split = reasoning_.feed(text);
  if (last) {
    ReasoningSplit rest = reasoning_.finish();
    split.reasoning += rest.reasoning;
    split.content += rest.content;
  }
  ToolParse parse = tools_.feed(split.content);
  if (last) {
    ToolParse rest = tools_.finish();
    parse.content += rest.content;
    for (auto& c : rest.calls) parse.calls.push_back(std::move(c));
  }
  ChatPiece piece;
  piece.reasoning = std::move(split.reasoning);
  piece.content = std::move(parse.content);
  piece.first_call_index = num_calls_;
  for (auto& call : parse.calls) {
    if (max_calls_ >= 0 && num_calls_ >= max_calls_) break;
    piece.calls.push_back(std::move(call));
    ++num_calls_;
  }
  return piece;
}

std::vector<json> chat_piece_deltas(const ChatPiece& piece, bool reasoning, int num_new_tokens) {
  std::vector<json> deltas;
  const bool has_text = !piece.reasoning.empty() || !piece.content.empty();
  if (has_text || piece.calls.empty()) {
    deltas.push_back(reasoning ? reasoning_delta(ReasoningSplit{piece.reasoning, piece.content}, num_new_tokens)
                               : stream_delta(/*chat=*/true, piece.content, num_new_tokens));
  }
  for (size_t i = 0; i < piece.calls.size(); ++i) {
    const ToolCall& call = piece.calls[i];
    const int index = piece.first_call_index + static_cast<int>(i);
    deltas.push_back({{"tool_calls", json::array({{{"index", index},
                                                   {"id", call.id},
                                                   {"type", "function"},
                                                   {"function", {{"name", call.name}, {"arguments", ""}}}}})}});
    deltas.push_back({{"tool_calls", json::array({{{"index", index}, {"function", {{"arguments", call.arguments}}}}})}});
  }
  return deltas;
}

std::string chat_finish_reason(const std::vector<ToolCall>& calls, const std::string& reason) {
  if (!calls.empty() && (reason == "stop" || reason == "length")) return "tool_calls";
  return reason;
}

}  // namespace tandem::frontend
