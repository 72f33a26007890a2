// Reading tool calls out of a model's reply text (vLLM's --tool-call-parser), piece by piece as the
// reply streams in:
//   hermes       Qwen3 / Hermes: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, any number
//                per reply, text before them is content.
//   llama3_json  Llama 3.1: the reply is JSON, {"name": ..., "parameters": {...}} (or "arguments"),
//                optionally after <|python_tag|>, several separated by ';'. A reply that does not start
//                that way is all content.
//
// The contract, the same whole and streamed (a reply cut into any pieces gives the same calls and the
// same content, which the tests check):
// - A call is reported once it is complete (hermes: its closing tag, or the end of the reply; llama:
//   its closing brace) and its JSON is valid: an object whose "name" is a non-empty string and whose
//   arguments are an object. `arguments` is that object's compact JSON text, keys in the model's order.
// - A call that is not valid (malformed JSON, no name, arguments not an object) is not an error: its
//   text, tags included, is content.
// - Whitespace alone between or around calls is not content; any other text is.
// - A piece that ends in what may be the start of a tag ("<tool_c") holds that part back.
//
// Thread-safety: none; one parser per choice of one request, used on one thread.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::frontend {

enum class ToolParserKind { kNone, kHermes, kLlama3Json };

// "hermes" or "llama3_json" ("" = kNone); nullopt for any other name.
std::optional<ToolParserKind> parse_tool_parser_kind(const std::string& name);
const char* tool_parser_name(ToolParserKind kind);

struct ToolCall {
  std::string id;         // "chatcmpl-tool-" + 32 hex digits, as vLLM names them
  std::string name;
  std::string arguments;  // a JSON object's text
};

// A fresh tool call id (random; unique in practice).
std::string new_tool_call_id();

struct ToolParse {
  std::string content;          // text to show as content now
  std::vector<ToolCall> calls;  // calls completed by this piece, in order
};

class ToolCallParser {
 public:
  using IdFn = std::function<std::string()>;
  // `new_id` names each call (tests inject a counter).
  explicit ToolCallParser(ToolParserKind kind, IdFn new_id = new_tool_call_id);

  // The next piece of reply text; returns what can be shown now.
  ToolParse feed(std::string_view text);
  // The reply ended: an unterminated call that is valid is a call, anything else held is content.
  ToolParse finish();
  int num_calls() const { return num_calls_; }

  // The whole reply at once (feed, then finish).
  static ToolParse parse(ToolParserKind kind, std::string_view text, IdFn new_id = new_tool_call_id);

 private:
  enum class State { kStart, kText, kCall, kJson };

  void feed_hermes(ToolParse* out);
  void feed_llama(ToolParse* out);
  // Outside text: whitespace is held until non-blank text follows it (or dropped before a call).
  void text(std::string_view s, ToolParse* out);
  // A call's JSON text: a call when valid, else `raw` (its whole text) becomes content.
  void complete_call(std::string_view json_text, std::string_view raw, ToolParse* out);
  // llama3_json: scans the object that starts at buffer_[object_start_] on from where the last piece
  // ended; the index of its closing brace, or npos while it is open.
  size_t scan_object();

  ToolParserKind kind_;
  IdFn new_id_;
  State state_;
  std::string buffer_;  // text read but not yet consumed (a partial tag, a call in progress)
  std::string blank_;   // whitespace outside calls, held
  int num_calls_ = 0;
  // Where earlier pieces left off, so that a long call costs linear time, not quadratic: hermes, how
  // much of buffer_ was searched for the closing tag; llama3_json, the open object's scan state.
  size_t scanned_ = 0;
  size_t object_start_ = std::string::npos;
  int depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace tandem::frontend
