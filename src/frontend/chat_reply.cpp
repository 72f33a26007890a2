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
    for (auto& d : rest.deltas) {
      // finish() may continue the last call of feed(): one delta per call per piece.
      if (!parse.deltas.empty() && parse.deltas.back().index == d.index && d.id.empty()) {
        parse.deltas.back().arguments += d.arguments;
      } else {
        parse.deltas.push_back(std::move(d));
      }
    }
  }
  ChatPiece piece;
  piece.reasoning = std::move(split.reasoning);
  piece.content = std::move(parse.content);
  for (auto& d : parse.deltas) {
    if (max_calls_ >= 0 && d.index >= max_calls_) continue;  // calls past the limit are dropped whole
    piece.calls.push_back(std::move(d));
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
  for (const ToolCallDelta& call : piece.calls) {
    if (!call.id.empty()) {
      deltas.push_back({{"tool_calls", json::array({{{"index", call.index},
                                                     {"id", call.id},
                                                     {"type", "function"},
                                                     {"function", {{"name", call.name}, {"arguments", ""}}}}})}});
    }
    if (!call.arguments.empty()) {
      deltas.push_back({{"tool_calls", json::array({{{"index", call.index}, {"function", {{"arguments", call.arguments}}}}})}});
    }
  }
  return deltas;
}

std::string chat_finish_reason(const std::vector<ToolCall>& calls, const std::string& reason) {
  if (!calls.empty() && (reason == "stop" || reason == "length")) return "tool_calls";
  return reason;
}

}  // namespace tandem::frontend
