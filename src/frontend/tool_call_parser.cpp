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

}  // namespace

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
    : kind_(kind), new_id_(std::move(new_id)), state_(kind == ToolParserKind::kLlama3Json ? State::kStart : State::kText) {}

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

void ToolCallParser::complete_call(std::string_view json_text, std::string_view raw, ToolParse* out) {
  if (auto call = read_call(json_text)) {
    call->id = new_id_();
    out->calls.push_back(std::move(*call));
    ++num_calls_;
    blank_.clear();
    return;
  }
  text(raw, out);
}

void ToolCallParser::feed_hermes(ToolParse* out) {
  while (!buffer_.empty()) {
    if (state_ == State::kText) {
      const size_t at = buffer_.find(kCallOpen);
      if (at == std::string::npos) {
        const size_t keep = partial_tag_suffix(buffer_, kCallOpen);
        text(std::string_view(buffer_).substr(0, buffer_.size() - keep), out);
        buffer_.erase(0, buffer_.size() - keep);
        return;
      }
      text(std::string_view(buffer_).substr(0, at), out);
      buffer_.erase(0, at + kCallOpen.size());
      state_ = State::kCall;
    } else {
      const size_t from = scanned_ >= kCallClose.size() ? scanned_ - kCallClose.size() + 1 : 0;
      const size_t at = buffer_.find(kCallClose, from);
      if (at == std::string::npos) {
        scanned_ = buffer_.size();
        return;  // the call goes on
      }
      const std::string body = buffer_.substr(0, at);
      complete_call(body, std::string(kCallOpen) + body + std::string(kCallClose), out);
      buffer_.erase(0, at + kCallClose.size());
      scanned_ = 0;
      state_ = State::kText;
    }
  }
}

void ToolCallParser::feed_llama(ToolParse* out) {
  if (state_ == State::kStart) {
    // The reply's first non-blank text decides: JSON (or <|python_tag|>) is calls, anything else content.
    size_t first = 0;
    while (first < buffer_.size() && is_space(buffer_[first])) ++first;
    const std::string_view rest = std::string_view(buffer_).substr(first);
    if (rest.empty() || (rest.size() < kPythonTag.size() && kPythonTag.substr(0, rest.size()) == rest)) return;
    if (rest.substr(0, kPythonTag.size()) == kPythonTag || rest[0] == '{') {
      const size_t skip = first + (rest[0] == '{' ? 0 : kPythonTag.size());
      blank_ = buffer_.substr(0, skip);  // the reply's own text until the JSON: content if no call comes
      buffer_.erase(0, skip);
      state_ = State::kJson;
    } else {
      state_ = State::kText;
    }
  }
  if (state_ == State::kText) {
    out->content += buffer_;
    buffer_.clear();
    return;
  }
  while (true) {
    if (object_start_ == std::string::npos) {
      size_t at = 0;
      while (at < buffer_.size() && (is_space(buffer_[at]) || (num_calls_ > 0 && buffer_[at] == ';'))) ++at;
      if (at == buffer_.size()) return;  // separators so far
      if (buffer_[at] == '{') {
        object_start_ = at;
        scanned_ = at;
        depth_ = 0;
        in_string_ = escaped_ = false;
      }
    }
    if (object_start_ != std::string::npos) {
      const size_t end = scan_object();
      if (end == std::string::npos) return;  // the object goes on
      auto call = read_call(std::string_view(buffer_).substr(object_start_, end + 1 - object_start_));
      object_start_ = std::string::npos;
      if (call) {
        call->id = new_id_();
        out->calls.push_back(std::move(*call));
        ++num_calls_;
        blank_.clear();
        buffer_.erase(0, end + 1);
        continue;
      }
    }
    // Not a call: from here on the reply is content (with its opening text if no call came before).
    out->content += (num_calls_ == 0 ? blank_ : std::string()) + buffer_;
    blank_.clear();
    buffer_.clear();
    state_ = State::kText;
    return;
  }
}

// Only brackets and strings are tracked; whether the object is valid JSON is read_call's to say.
size_t ToolCallParser::scan_object() {
  for (; scanned_ < buffer_.size(); ++scanned_) {
    const char c = buffer_[scanned_];
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ == 0) {
      return scanned_++;
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
  if (kind_ == ToolParserKind::kHermes) {
    feed_hermes(&out);
  } else {
    feed_llama(&out);
  }
  return out;
}

ToolParse ToolCallParser::finish() {
  ToolParse out;
  if (kind_ == ToolParserKind::kHermes) {
    if (state_ == State::kCall) {
      // Cut off before its closing tag (max_tokens, a stop string): a call still if its JSON is whole.
      const std::string body = buffer_;
      complete_call(body, std::string(kCallOpen) + body, &out);
    } else {
      text(buffer_, &out);
    }
  } else if (state_ == State::kJson) {
    size_t at = 0;
    while (at < buffer_.size() && (is_space(buffer_[at]) || buffer_[at] == ';')) ++at;
    if (num_calls_ == 0) {
      out.content += blank_ + buffer_;  // an object that never closed: the reply as it came
      blank_.clear();
    } else if (at < buffer_.size()) {
      out.content += buffer_;
    }
  } else {
    out.content += buffer_;  // kStart: blank, or a beginning of <|python_tag|> that never finished
  }
  buffer_.clear();
  object_start_ = std::string::npos;
  scanned_ = 0;
  if (num_calls_ == 0) out.content += blank_;  // a reply without calls keeps every byte
  blank_.clear();
  state_ = State::kText;
  return out;
}

ToolParse ToolCallParser::parse(ToolParserKind kind, std::string_view text, IdFn new_id) {
  ToolCallParser parser(kind, std::move(new_id));
  ToolParse out = parser.feed(text);
  ToolParse rest = parser.finish();
  out.content += rest.content;
  for (auto& c : rest.calls) out.calls.push_back(std::move(c));
  return out;
}

}  // namespace tandem::frontend
