// Fuzz target: model reply text -> tool calls (ToolCallParser, hermes and llama3_json), the text a
// user's prompt can steer. Any bytes, in any pieces: no crash, and the pieces give exactly the calls
// and content the whole gives (the parsers' streaming contract, tool_call_parser.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "frontend/tool_call_parser.h"

namespace {

using tandem::frontend::ToolCallParser;
using tandem::frontend::ToolParse;
using tandem::frontend::ToolParserKind;

std::string flatten(const ToolParse& p) {
  std::string out = p.content;
  for (const auto& c : p.calls) out += "\x01" + c.name + "\x02" + c.arguments + "\x03" + c.id;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const ToolParserKind kind = data[0] & 1 ? ToolParserKind::kHermes : ToolParserKind::kLlama3Json;
  const size_t step = 1 + data[1] % 16;  // piece length
  const std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  auto ids = [] { return std::string("id"); };
  const std::string whole = flatten(ToolCallParser::parse(kind, text, ids));
  ToolCallParser parser(kind, ids);
  ToolParse pieces;
  for (size_t at = 0; at < text.size(); at += step) {
    ToolParse p = parser.feed(std::string_view(text).substr(at, step));
    pieces.content += p.content;
    for (auto& c : p.calls) pieces.calls.push_back(std::move(c));
  }
  ToolParse rest = parser.finish();
  pieces.content += rest.content;
  for (auto& c : rest.calls) pieces.calls.push_back(std::move(c));
  if (flatten(pieces) != whole) __builtin_trap();
  return 0;
}
