// The tool-call parsers behind --tool-call-parser (see tool_call_parser.h).
#include "frontend/tool_call_parser.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <random>

namespace tandem::frontend {
namespace {

constexpr std::string_view kCallOpen = "<tool_call>";
constexpr std::string_view kCallClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// The length of the longest end of `text` that is a proper beginning of `tag` (0 if none).
size_t partial_tag_suffix(std::string_view text, std::string_view tag) {
  for (size_t k = std::min(tag.size() - 1, text.size()); k > 0; --k) {
    if (tag.substr(0, k) == text.substr(text.size() - k)) return k;
  }
  return 0;
}

// A call's JSON: {"name": non-empty string, "arguments" (or "parameters"): object}; no arguments
// key at all reads as {} (a function without parameters).
std::optional<ToolCall> read_call(std::string_view json_text) {
  const auto j = nlohmann::ordered_json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  auto name = j.find("name");
  if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) return std::nullopt;
  auto args = j.find("arguments");
  if (args == j.end()) args = j.find("parameters");
  if (args != j.end() && !args->is_object()) return std::nullopt;
  return ToolCall{"", name->get<std::string>(), args == j.end() ? "{}" : args->dump()};
}


// The start of a call as the models are prompted to write it: {"name": "<name>", "arguments": {
// ("parameters" too). kYes with the name and where the arguments' '{' is; kMore while `s` is a
// beginning of one. Decided within the call's first kMaxHead bytes, so that the answer does not depend
// on how the text was cut.
enum class HeadMatch { kMore, kNo, kYes };
constexpr size_t kMaxHead = 1024;

HeadMatch match_call_head(std::string_view s, std::string* name, size_t* arguments_at) {
  const bool truncated = s.size() > kMaxHead;
  if (truncated) s = s.substr(0, kMaxHead);
  const HeadMatch more = truncated ? HeadMatch::kNo : HeadMatch::kMore;
  size_t i = 0;
  auto skip_blanks = [&] {
    while (i < s.size() && is_space(s[i])) ++i;
  };
  auto punct = [&](char c) {
    skip_blanks();
    if (i == s.size()) return more;
    if (s[i] != c) return HeadMatch::kNo;
    ++i;
    return HeadMatch::kYes;
  };
  auto string = [&](std::string* out) {
    skip_blanks();
    if (i == s.size()) return more;
    if (s[i] != '"') return HeadMatch::kNo;
    size_t j = i + 1;
    for (bool escaped = false; j < s.size(); ++j) {
      if (escaped) {
        escaped = false;
      } else if (s[j] == '\\') {
        escaped = true;
      } else if (s[j] == '"') {
        break;
      }
    }
    if (j == s.size()) return more;
    const auto literal = nlohmann::json::parse(s.substr(i, j + 1 - i), nullptr, /*allow_exceptions=*/false);
    if (literal.is_discarded() || !literal.is_string()) return HeadMatch::kNo;
    *out = literal.get<std::string>();
    i = j + 1;
    return HeadMatch::kYes;
  };
  std::string key;
  HeadMatch m;
  if ((m = punct('{')) != HeadMatch::kYes) return m;
  if ((m = string(&key)) != HeadMatch::kYes) return m;
  if (key != "name") return HeadMatch::kNo;
  if ((m = punct(':')) != HeadMatch::kYes) return m;
  if ((m = string(name)) != HeadMatch::kYes) return m;
  if (name->empty()) return HeadMatch::kNo;
  if ((m = punct(',')) != HeadMatch::kYes) return m;
  if ((m = string(&key)) != HeadMatch::kYes) return m;
  if (key != "arguments" && key != "parameters") return HeadMatch::kNo;
  if ((m = punct(':')) != HeadMatch::kYes) return m;
  skip_blanks();
  if (i == s.size()) return more;
  if (s[i] != '{') return HeadMatch::kNo;
  *arguments_at = i;
  return HeadMatch::kYes;
}

}  // namespace

void apply_tool_call_deltas(const std::vector<ToolCallDelta>& deltas, std::vector<ToolCall>* calls) {
  for (const ToolCallDelta& d : deltas) {
    if (!d.id.empty()) calls->push_back(ToolCall{d.id, d.name, ""});
    if (d.index >= 0 && d.index < static_cast<int>(calls->size())) (*calls)[d.index].arguments += d.arguments;
  }
}

std::optional<ToolParserKind> parse_tool_parser_kind(const std::string& name) {
  if (name.empty()) return ToolParserKind::kNone;
  if (name == "hermes") return ToolParserKind::kHermes;
  if (name == "llama3_json") return ToolParserKind::kLlama3Json;
  return std::nullopt;
}

const char* tool_parser_name(ToolParserKind kind) {
  switch (kind) {
    case ToolParserKind::kHermes: return "hermes";
    case ToolParserKind::kLlama3Json: return "llama3_json";
    case ToolParserKind::kNone: break;
  }
  return "";
}

std::string new_tool_call_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return std::string("chatcmpl-tool-") + hex;
}

ToolCallParser::ToolCallParser(ToolParserKind kind, IdFn new_id)
    : kind_(kind), new_id_(std::move(new_id)), state_(kind == ToolParserKind::kLlama3Json ? State::kStart : State::kBetween) {
  if (kind == ToolParserKind::kHermes) {
    call_open_ = kCallOpen;
    call_close_ = kCallClose;
  }
}

void ToolCallParser::text(std::string_view s, ToolParse* out) {
  size_t end = s.size();
  while (end > 0 && is_space(s[end - 1])) --end;
  if (end == 0) {
    blank_.append(s);
    return;
  }
  out->content += blank_;
  out->content.append(s.substr(0, end));
  blank_.assign(s.substr(end));
}

ToolCallDelta& ToolCallParser::call_delta(ToolParse* out) {
  const int index = num_calls_ - 1;
  if (out->deltas.empty() || out->deltas.back().index != index) out->deltas.push_back(ToolCallDelta{index, "", "", ""});
  return out->deltas.back();
}

bool ToolCallParser::complete_call(std::string_view json_text, ToolParse* out) {
  auto call = read_call(json_text);
  if (!call) return false;
  ++num_calls_;
  ToolCallDelta& d = call_delta(out);
  d.id = new_id_();
  d.name = std::move(call->name);
  d.arguments = std::move(call->arguments);
  blank_.clear();
  return true;
}

void ToolCallParser::rest_is_content(std::string_view held_before, ToolParse* out) {
  if (num_calls_ == 0) out->content += blank_;
  out->content.append(held_before);
  out->content += buffer_;
  blank_.clear();
  buffer_.clear();
  state_ = State::kContent;
}

bool ToolCallParser::read_call_head(ToolParse* out) {
  std::string name;
  size_t arguments_at = 0;
  switch (match_call_head(buffer_, &name, &arguments_at)) {
    case HeadMatch::kMore: return false;
    case HeadMatch::kNo:
      state_ = State::kCallWhole;
      scanned_ = 0;
      depth_ = 0;
      in_string_ = escaped_ = false;
      return true;
    case HeadMatch::kYes: break;
  }
  // The header goes out now; from here on this is a call.
  ++num_calls_;
  ToolCallDelta& d = call_delta(out);
  d.id = new_id_();
  d.name = std::move(name);
  blank_.clear();
  buffer_.erase(0, arguments_at);
  state_ = State::kCallArgs;
  depth_ = 0;
  in_string_ = escaped_ = false;
  return true;
}

size_t ToolCallParser::stream_arguments(std::string_view s, ToolParse* out) {
  std::string& fragment = call_delta(out).arguments;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string_) {
      fragment += c;
      string_byte(c);
      continue;
    }
    if (is_space(c)) continue;
    fragment += c;
    if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ <= 0) {
      state_ = State::kCallTail;
      return i + 1;
    }
  }
  return s.size();
}

void ToolCallParser::read_reply_start() {
  // The reply's first non-blank text decides: JSON (or <|python_tag|>) is calls, anything else content.
  size_t first = 0;
  while (first < buffer_.size() && is_space(buffer_[first])) ++first;
  const std::string_view rest = std::string_view(buffer_).substr(first);
  if (rest.empty() || (rest.size() < kPythonTag.size() && kPythonTag.substr(0, rest.size()) == rest)) return;
  if (rest.substr(0, kPythonTag.size()) == kPythonTag || rest[0] == '{') {
    const size_t skip = first + (rest[0] == '{' ? 0 : kPythonTag.size());
    blank_ = buffer_.substr(0, skip);  // the reply's own text until the JSON: content if no call comes
    buffer_.erase(0, skip);
    state_ = State::kBetween;
  } else {
    state_ = State::kContent;
  }
}

bool ToolCallParser::read_between_calls(ToolParse* out) {
  if (!call_open_.empty()) {
    const size_t at = buffer_.find(call_open_);
    if (at == std::string::npos) {
      const size_t keep = partial_tag_suffix(buffer_, call_open_);
      text(std::string_view(buffer_).substr(0, buffer_.size() - keep), out);
      buffer_.erase(0, buffer_.size() - keep);
      return false;
    }
    text(std::string_view(buffer_).substr(0, at), out);
    buffer_.erase(0, at + call_open_.size());
    state_ = State::kCallHead;
    return true;
  }
  size_t at = 0;
  while (at < buffer_.size() && (is_space(buffer_[at]) || (num_calls_ > 0 && buffer_[at] == ';'))) ++at;
  if (at == buffer_.size()) return false;  // separators so far
  if (buffer_[at] != '{') {
    // Not a call: from here on the reply is content (with its opening text if no call came before).
    rest_is_content("", out);
    return false;
  }
  separator_ = buffer_.substr(0, at);
  buffer_.erase(0, at);
  state_ = State::kCallHead;
  return true;
}

size_t ToolCallParser::find_call_end(size_t* after) {
  if (call_close_.empty()) {
    const size_t end = scan_to_close();
    if (end == std::string::npos) return end;
    *after = end + 1;
    return end + 1;
  }
  const size_t from = scanned_ >= call_close_.size() ? scanned_ - call_close_.size() + 1 : 0;
  const size_t at = buffer_.find(call_close_, from);
  if (at == std::string::npos) {
    scanned_ = buffer_.size();
    return at;
  }
  scanned_ = 0;
  *after = at + call_close_.size();
  return at;
}

void ToolCallParser::feed_calls(ToolParse* out) {
  while (true) {
    switch (state_) {
      case State::kStart:
        read_reply_start();
        if (state_ == State::kStart) return;
        break;
      case State::kBetween:
        if (!read_between_calls(out)) return;
        break;
      case State::kContent:
        out->content += buffer_;
        buffer_.clear();
        return;
      case State::kCallHead:
        if (!read_call_head(out)) return;
        break;
      case State::kCallWhole: {
        size_t after = 0;
        const size_t end = find_call_end(&after);
        if (end == std::string::npos) return;  // the call goes on
        const std::string body = buffer_.substr(0, end);
        if (!complete_call(body, out)) {
          if (call_close_.empty()) {
            // Not a call: from here on the reply is content (with its opening text if no call came before).
            rest_is_content(separator_, out);
            return;
          }
          text(std::string(call_open_) + body + std::string(call_close_), out);
        }
        buffer_.erase(0, after);
        state_ = State::kBetween;
        break;
      }
      case State::kCallArgs: {
        // A closing tag ends the call wherever it is; a piece's end that may begin it waits.
        const bool tagged = !call_close_.empty();
        const size_t close = tagged ? buffer_.find(call_close_) : std::string::npos;
        const size_t limit = close != std::string::npos ? close
                             : tagged                   ? buffer_.size() - partial_tag_suffix(buffer_, call_close_)
                                                        : buffer_.size();
        const size_t taken = stream_arguments(std::string_view(buffer_).substr(0, limit), out);
        buffer_.erase(0, taken);
        if (state_ == State::kCallArgs) {
          if (close == std::string::npos) return;
          buffer_.erase(0, close - taken + call_close_.size());  // cut short by the closing tag
          state_ = State::kBetween;
          break;
        }
        // Skip the rest of the call; a bare object was opened one level above the arguments.
        scanned_ = 0;
        depth_ = 1;
        in_string_ = escaped_ = false;
        break;
      }
      case State::kCallTail: {
        size_t after = 0;
        if (find_call_end(&after) == std::string::npos) {
          // Keep only what may begin the closing tag: the rest of the call is not shown.
          buffer_.erase(0, buffer_.size() - (call_close_.empty() ? 0 : partial_tag_suffix(buffer_, call_close_)));
          scanned_ = buffer_.size();
          return;
        }
        buffer_.erase(0, after);
        state_ = State::kBetween;
        break;
      }
    }
  }
}

void ToolCallParser::string_byte(char c) {
  if (escaped_) {
    escaped_ = false;
  } else if (c == '\\') {
    escaped_ = true;
  } else if (c == '"') {
    in_string_ = false;
  }
}

size_t ToolCallParser::scan_to_close() {
  for (; scanned_ < buffer_.size(); ++scanned_) {
    const char c = buffer_[scanned_];
    if (in_string_) {
      string_byte(c);
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ == 0) {
      const size_t end = scanned_;
      scanned_ = 0;
      return end;
    }
  }
  return std::string::npos;
}

ToolParse ToolCallParser::feed(std::string_view piece) {
  ToolParse out;
  if (kind_ == ToolParserKind::kNone) {
    out.content.assign(piece);
    return out;
  }
  buffer_.append(piece);
  feed_calls(&out);
  return out;
}

ToolParse ToolCallParser::finish() {
  ToolParse out;
  if (kind_ == ToolParserKind::kHermes) {
    switch (state_) {
      case State::kCallHead:
      case State::kCallWhole:
        // Cut off before its closing tag (max_tokens, a stop string): a call still if its JSON is whole.
        if (!complete_call(buffer_, &out)) text(std::string(kCallOpen) + buffer_, &out);
        break;
      case State::kCallArgs: stream_arguments(buffer_, &out); break;  // what a partial tag held back
      case State::kCallTail: break;
      default: text(buffer_, &out); break;
    }
  } else {
    switch (state_) {
      case State::kBetween:
        if (num_calls_ == 0) {
          out.content += blank_ + buffer_;  // e.g. <|python_tag|> and nothing after it
          blank_.clear();
        }
        break;
      case State::kCallHead:
      case State::kCallWhole:
        // An object that never closed: as it came (the reply's opening text too when it is the first).
        rest_is_content(separator_, &out);
        break;
      case State::kCallArgs:
      case State::kCallTail: break;
      default: out.content += buffer_; break;  // kStart: blank, or a beginning of <|python_tag|>; kContent: empty
    }
  }
  buffer_.clear();
  separator_.clear();
  scanned_ = 0;
  if (num_calls_ == 0) out.content += blank_;  // a reply without calls keeps every byte
  blank_.clear();
  state_ = kind_ == ToolParserKind::kHermes ? State::kBetween : State::kContent;
  return out;
}

ToolReply ToolCallParser::parse(ToolParserKind kind, std::string_view text, IdFn new_id) {
  ToolCallParser parser(kind, std::move(new_id));
  ToolParse out = parser.feed(text);
  ToolParse rest = parser.finish();
  ToolReply reply;
  reply.content = out.content + rest.content;
  apply_tool_call_deltas(out.deltas, &reply.calls);
  apply_tool_call_deltas(rest.deltas, &reply.calls);
  return reply;
}

}  // namespace tandem::frontend
