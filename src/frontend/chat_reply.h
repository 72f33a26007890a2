// A chat reply as the client sees it: the model's text split by the reasoning parser (the think
// block first) and then the tool-call parser (calls out of the answer), and the stream deltas and
// message fields made of the parts. Only chat requests with --reasoning-parser, or with tools read by
// --tool-call-parser, go through here; a plain reply is its text.
//
// Thread-safety: none; one ChatReplyParser per choice of one request, used on one thread.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "frontend/reasoning_parser.h"
#include "frontend/tool_call_parser.h"

namespace tandem::frontend {

// What one piece of reply text turned into.
struct ChatPiece {
  std::string reasoning;
  std::string content;
  std::vector<ToolCallDelta> calls;  // calls begun and argument fragments (tool_call_parser.h)
};

class ChatReplyParser {
 public:
  // `max_calls` (-1: no limit): calls past it are dropped (parallel_tool_calls false keeps the first).
  ChatReplyParser(ReasoningFormat reasoning, bool think_open, ToolParserKind tools, int max_calls = -1,
                  ToolCallParser::IdFn new_id = new_tool_call_id);
  // The next piece of reply text; `last`: the reply ends with it (held-back text is released).
  ChatPiece feed(std::string_view text, bool last);

 private:
  ReasoningParser reasoning_;
  ToolCallParser tools_;
  int max_calls_;
};

// The stream deltas of one piece: its text (reasoning_content and/or content, as reasoning_delta or
// stream_delta make it, per `reasoning`) unless it has none and calls came, then per call delta, as
// vLLM streams them: a call's header {index, id, type, function: {name, arguments: ""}} when it
// begins, and {index, function: {arguments}} with each non-empty fragment of its arguments. Never
// empty: {} for a finish alone.
std::vector<nlohmann::json> chat_piece_deltas(const ChatPiece& piece, bool reasoning, int num_new_tokens);

// A chat choice's finish_reason: "tool_calls" when it made calls and stopped or ran out of tokens
// (vLLM's rule), else `reason`.
std::string chat_finish_reason(const std::vector<ToolCall>& calls, const std::string& reason);

}  // namespace tandem::frontend
