// Incremental parsers for a streamed HTTP/1.1 response: the status line and headers, the body framing
// (Content-Length, chunked, or until close), and Server-Sent Events in the body. Fed bytes as they arrive
// from a socket, so the caller can timestamp each event with the read that completed it.
// No I/O here; each parser is owned by one request. Thread-safety: none needed (one owner).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tandem::loadgen {

class HttpResponseParser {
 public:
  // Parses data and appends body bytes (framing removed) to body. Returns Corruption on malformed input;
  // the parser is then unusable.
  Status feed(std::string_view data, std::string& body);
  // The peer closed the connection. Returns OK when that ends the body (close-delimited), Unavailable
  // when the response was cut short.
  Status finish_on_close();

  bool headers_done() const { return state_ > State::kHeaders; }
  bool complete() const { return state_ == State::kDone; }
  int status_code() const { return status_code_; }
  // Whether the connection may carry another request after this response.
  bool keep_alive() const { return keep_alive_; }
  const std::string& content_type() const { return content_type_; }

 private:
  enum class State { kHeaders, kFixedBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kUntilClose, kDone };
  Status parse_headers(std::string_view head);

  State state_ = State::kHeaders;
  std::string pending_;  // bytes of an incomplete header block or chunk-size line
  int status_code_ = 0;
  bool keep_alive_ = true;
  std::string content_type_;
  uint64_t remaining_ = 0;  // bytes left in the fixed body or the current chunk
};

// Server-Sent Events (the WHATWG EventSource format): lines "data: ..." accumulate until a blank line
// ends the event. Other fields and comments are ignored, as the OpenAI streams use only data.
class SseParser {
 public:
  // Appends the data of every event completed by this text to events.
  void feed(std::string_view text, std::vector<std::string>& events);
  // Data of an event left open when the stream ended (no blank line after it); empty when none.
  std::string take_unterminated();

 private:
  std::string line_;   // the incomplete current line
  std::string data_;   // the current event's data so far
  bool has_data_ = false;
};

}  // namespace tandem::loadgen
