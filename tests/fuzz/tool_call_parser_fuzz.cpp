// Fuzz target: model reply text -> tool calls (ToolCallParser, hermes and llama3_json), the text a
// user's prompt can steer. Any bytes, in any pieces: no crash, and the pieces give exactly the calls
// and content the whole gives (the parsers' streaming contract, tool_call_parser.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "frontend/tool_call_parser.h"

namespace {

using tandem::frontend::ToolCall;
using tandem::frontend::ToolCallParser;
using tandem::frontend::ToolParse;
using tandem::frontend::ToolParserKind;

std::string flatten(const std::string& content, const std::vector<ToolCall>& calls) {
  std::string out = content;
  for (const auto& c : calls) out += "\x01" + c.name + "\x02" + c.arguments + "\x03" + c.id;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const ToolParserKind kind = data[0] & 1 ? ToolParserKind::kHermes : ToolParserKind::kLlama3Json;
  const size_t step = 1 + data[1] % 16;  // piece length
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  auto ids = [] { return std::string("id"); };
  const auto reply = ToolCallParser::parse(kind, text, ids);
  const std::string whole = flatten(reply.content, reply.calls);
  ToolCallParser parser(kind, ids);
  std::string content;
  std::vector<ToolCall> calls;
  for (size_t at = 0; at < text.size(); at += step) {
    ToolParse p = parser.feed(std::string_view(text).substr(at, step));
    content += p.content;
    tandem::frontend::apply_tool_call_deltas(p.deltas, &calls);
  }
  ToolParse rest = parser.finish();
  content += rest.content;
  tandem::frontend::apply_tool_call_deltas(rest.deltas, &calls);
  if (flatten(content, calls) != whole) __builtin_trap();
  return 0;
}
