// HTTP/1.1 response framing (RFC 9112 §6-7) and SSE parsing for the benchmark client.
#include "loadgen/http_stream.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace tandem::loadgen {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Status HttpResponseParser::parse_headers(std::string_view head) {
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  // "HTTP/1.1 200 OK"
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") {
    return Status::Corruption("bad HTTP status line '" + std::string(status_line.substr(0, 60)) + "'");
  }
  bool http10 = status_line.substr(0, 8) == "HTTP/1.0";
  keep_alive_ = !http10;
  // Checked before the pointer arithmetic: npos + 1 overflows the pointer (tests/fuzz/sse_stream_fuzz).
  size_t sp = status_line.find(' ');
  if (sp == std::string_view::npos) {
    return Status::Corruption("bad HTTP status line '" + std::string(status_line.substr(0, 60)) + "'");
  }
  auto [ptr, ec] = std::from_chars(status_line.data() + sp + 1, status_line.data() + status_line.size(), status_code_);
  (void)ptr;
  if (ec != std::errc()) {
    return Status::Corruption("bad HTTP status line '" + std::string(status_line.substr(0, 60)) + "'");
  }
  bool chunked = false;
  bool has_length = false;
  uint64_t length = 0;
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) end = head.size();
    std::string_view line = head.substr(pos, end - pos);
    pos = end + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = lower(trim(line.substr(0, colon)));
    std::string_view value = trim(line.substr(colon + 1));
    if (name == "transfer-encoding") {
      chunked = lower(value).find("chunked") != std::string::npos;
    } else if (name == "content-length") {
      auto [p, e] = std::from_chars(value.data(), value.data() + value.size(), length);
      (void)p;
      if (e != std::errc()) return Status::Corruption("bad Content-Length '" + std::string(value) + "'");
      has_length = true;
    } else if (name == "connection") {
      std::string v = lower(value);
      if (v.find("close") != std::string::npos) keep_alive_ = false;
      if (v.find("keep-alive") != std::string::npos) keep_alive_ = true;
    } else if (name == "content-type") {
      content_type_ = lower(value);
    }
  }
  if (chunked) {
    state_ = State::kChunkSize;
  } else if (has_length) {
    remaining_ = length;
    state_ = length == 0 ? State::kDone : State::kFixedBody;
  } else if (status_code_ == 204 || status_code_ == 304) {
    state_ = State::kDone;
  } else {
    keep_alive_ = false;
    state_ = State::kUntilClose;
  }
  return Status::Ok();
}

Status HttpResponseParser::feed(std::string_view data, std::string& body) {
  while (!data.empty()) {
    switch (state_) {
      case State::kHeaders: {
        // The blank line may straddle reads: search the joined bytes, from a little before the new ones.
        size_t old = pending_.size();
        pending_.append(data);
        size_t from = old >= 3 ? old - 3 : 0;
        size_t end = pending_.find("\r\n\r\n", from);
        if (end == std::string::npos) {
          if (pending_.size() > 64 * 1024) return Status::Corruption("HTTP headers longer than 64 KiB");
          return Status::Ok();
        }
        std::string rest = pending_.substr(end + 4);
        TANDEM_RETURN_IF_ERROR(parse_headers(std::string_view(pending_).substr(0, end)));
        pending_.clear();
        // Re-enter with what followed the headers; `rest` outlives the loop iteration via recursion.
        if (rest.empty()) return Status::Ok();
        return feed(rest, body);
      }
      case State::kFixedBody: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        body.append(data.substr(0, n));
        data.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kUntilClose:
        body.append(data);
        return Status::Ok();
      case State::kChunkSize:
      case State::kTrailers: {
        size_t nl = data.find('\n');
        if (nl == std::string_view::npos) {
          pending_.append(data);
          if (pending_.size() > 4096) return Status::Corruption("HTTP chunk header too long");
          return Status::Ok();
        }
        pending_.append(data.substr(0, nl));
        data.remove_prefix(nl + 1);
        std::string line = std::move(pending_);
        pending_.clear();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (state_ == State::kTrailers) {
          if (line.empty()) state_ = State::kDone;
          break;
        }
        uint64_t size = 0;
        size_t semi = line.find(';');
        std::string_view digits = trim(std::string_view(line).substr(0, semi));
        auto [p, e] = std::from_chars(digits.data(), digits.data() + digits.size(), size, 16);
        if (e != std::errc() || p != digits.data() + digits.size() || digits.empty()) {
          return Status::Corruption("bad HTTP chunk size '" + line.substr(0, 40) + "'");
        }
        if (size == 0) {
          state_ = State::kTrailers;
        } else {
          remaining_ = size;
          state_ = State::kChunkData;
        }
        break;
      }
      case State::kChunkData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        body.append(data.substr(0, n));
        data.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        break;
      }
      case State::kChunkDataEnd: {
        // The CRLF after chunk data; tolerate a bare LF.
        char c = data.front();
        data.remove_prefix(1);
        if (c == '\n') {
          state_ = State::kChunkSize;
        } else if (c != '\r') {
          return Status::Corruption("HTTP chunk not followed by CRLF");
        }
        break;
      }
      case State::kDone:
        // Bytes after a complete response: a pipelining server we never asked; ignore them.
        return Status::Ok();
    }
  }
  return Status::Ok();
}

Status HttpResponseParser::finish_on_close() {
  if (state_ == State::kUntilClose) {
    state_ = State::kDone;
    return Status::Ok();
  }
  if (state_ == State::kDone) return Status::Ok();
  keep_alive_ = false;
  return Status::Unavailable(state_ == State::kHeaders ? "connection closed before the response headers"
                                                       : "connection closed in the middle of the response");
}

void SseParser::feed(std::string_view text, std::vector<std::string>& events) {
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      line_.append(text);
      return;
    }
    line_.append(text.substr(0, nl));
    text.remove_prefix(nl + 1);
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) {
      if (has_data_) events.push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
    } else if (line_.compare(0, 5, "data:") == 0) {
      std::string_view value = std::string_view(line_).substr(5);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_.append(value);
      has_data_ = true;
    }
    line_.clear();
  }
}

std::string SseParser::take_unterminated() {
  if (!line_.empty() && line_.compare(0, 5, "data:") == 0) {
    std::string_view value = std::string_view(line_).substr(5);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  }
  line_.clear();
  std::string out = has_data_ ? std::move(data_) : std::string();
  data_.clear();
  has_data_ = false;
  return out;
}

}  // namespace tandem::loadgen
