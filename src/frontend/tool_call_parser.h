// Reading tool calls out of a model's reply text (vLLM's --tool-call-parser), piece by piece as the
// reply streams in:
//   hermes       Qwen3 / Hermes: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, any number
//                per reply, text before them is content.
//   llama3_json  Llama 3.1: the reply is JSON, {"name": ..., "parameters": {...}} (or "arguments"),
//                optionally after <|python_tag|>, several separated by ';'. A reply that does not start
//                that way is all content.
//
// Calls come out as deltas, as vLLM streams them: a call's first delta names it (id, name), the next
// ones carry its arguments' text piece by piece as the model writes them.
//
// The contract, the same whole and streamed (a reply cut into any pieces gives the same deltas joined,
// the same calls and the same content, which the tests check):
// - A call that starts the way the models are prompted to write one, {"name": "<name>", "arguments":
//   {   (or "parameters"; blanks anywhere between), is a call from the arguments' first brace on: its
//   header goes out then, and its arguments stream as they come, blanks outside strings removed, up to
//   their closing brace (or the end of the call or reply). What follows the arguments in the call is
//   not shown. Once the header is out the call stays a call even if the model breaks its JSON later
//   (the arguments are then what it wrote, which may not parse: OpenAI's arguments carry the same
//   warning), because what was streamed cannot be taken back.
// - Any other call (keys in another order, other keys first) is checked whole once complete (hermes:
//   its closing tag, or the end of the reply; llama: its closing brace) and is a call, in one delta,
//   when its JSON is an object whose "name" is a non-empty string and whose arguments are an object
//   (their compact JSON text, keys in the model's order).
// - A call that is neither (malformed JSON before its arguments, no name, arguments not an object)
//   is not an error: its text, tags included, is content.
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

// A piece of a call, as a stream delta carries it: the call's first delta has its id and name; any
// delta may carry the next fragment of its arguments (its first too).
struct ToolCallDelta {
  int index = 0;          // the call's place among the reply's calls (0, 1, ...)
  std::string id;         // on the call's first delta only
  std::string name;       // on the call's first delta only
  std::string arguments;  // the next fragment of the arguments' text (may be empty)
};

struct ToolParse {
  std::string content;                // text to show as content now
  std::vector<ToolCallDelta> deltas;  // in order; at most one per call per piece
};

// The calls so far after `deltas`: a delta with an id starts a call, fragments are appended to theirs.
void apply_tool_call_deltas(const std::vector<ToolCallDelta>& deltas, std::vector<ToolCall>* calls);

// A whole reply read at once.
struct ToolReply {
  std::string content;
  std::vector<ToolCall> calls;
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
  static ToolReply parse(ToolParserKind kind, std::string_view text, IdFn new_id = new_tool_call_id);

 private:
  // One state machine serves both parsers; what differs is the text around calls: hermes's tags
  // (call_open_, call_close_), or llama3_json's bare objects after an optional <|python_tag|>.
  enum class State {
    kStart,      // llama3_json: nothing but blanks read yet
    kBetween,    // outside calls: hermes, text that may hold the next <tool_call>; llama3_json, blanks
                 // and ';' before the next object
    kContent,    // llama3_json: the reply is content from here on
    kCallHead,   // a call begun, its start not yet known to be {"name": ..., "arguments": {
    kCallWhole,  // a call of another shape: read whole, then checked
    kCallArgs,   // a call whose header is out: its arguments stream
    kCallTail,   // the arguments closed: the rest of the call is skipped
  };

  // Consumes buffer_ as far as it can tell what it is, state by state.
  void feed_calls(ToolParse* out);
  // llama3_json's kStart: the reply's first non-blank text decides whether it holds calls.
  void read_reply_start();
  // kBetween: text up to the next call; false while it needs more.
  bool read_between_calls(ToolParse* out);
  // Outside text: whitespace is held until non-blank text follows it (or dropped before a call).
  void text(std::string_view s, ToolParse* out);
  // A call's JSON text: true when it is a valid call (its delta goes out), false when it is not.
  bool complete_call(std::string_view json_text, ToolParse* out);
  // llama3_json: from here on the reply is content: `held_before` and buffer_, after the reply's opening
  // text when no call came before.
  void rest_is_content(std::string_view held_before, ToolParse* out);
  // Where the open call ends in buffer_: the length of its JSON text, npos while it goes on; `after`
  // gets where the text after the call starts (past hermes's closing tag).
  size_t find_call_end(size_t* after);
  // buffer_ starts a call's object: decides kCallArgs (the header goes out) or kCallWhole, or waits.
  // Returns false while it cannot tell yet.
  bool read_call_head(ToolParse* out);
  // Streams the arguments' text in `s` (blanks outside strings dropped) into the open call's delta;
  // returns how much of `s` it took (less than all once the arguments' closing brace is read).
  size_t stream_arguments(std::string_view s, ToolParse* out);
  // The open call's delta in `out` (made on first use).
  ToolCallDelta& call_delta(ToolParse* out);
  // A byte inside a JSON string: follows its escapes, and its end (in_string_, escaped_).
  void string_byte(char c);
  // Scans buffer_ from scanned_ for the end of the bracket opened before depth_ (strings skipped);
  // the index of the byte that closes it, or npos while it is open.
  size_t scan_to_close();

  ToolParserKind kind_;
  IdFn new_id_;
  State state_;
  std::string buffer_;     // text read but not yet consumed (a partial tag, a call in progress)
  std::string blank_;      // whitespace outside calls, held
  std::string separator_;  // llama3_json: the blanks and ';' before the object in buffer_ (content if it is no call)
  int num_calls_ = 0;
  // The tags around each call (hermes); both empty for llama3_json, whose calls are bare objects.
  std::string_view call_open_;
  std::string_view call_close_;
  // Where earlier pieces left off, so that a long call costs linear time, not quadratic: hermes, how
  // much of buffer_ was searched for the closing tag; llama3_json, the open object's scan state.
  size_t scanned_ = 0;
  int depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace tandem::frontend
