// Fuzz target: the bench client's streamed-response parsers (HTTP status line, headers, Content-Length /
// chunked / close-delimited framing, then Server-Sent Events), fed the bytes in pieces as a socket would
// deliver them. The first byte picks the piece size.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "loadgen/http_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t piece = 1 + data[0] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  tandem::loadgen::HttpResponseParser response;
  tandem::loadgen::SseParser sse;
  std::vector<std::string> events;
  bool failed = false;
  while (!bytes.empty() && !response.complete()) {
    std::string body;
    const size_t n = std::min(piece, bytes.size());
    if (!response.feed(bytes.substr(0, n), body).ok()) {
      failed = true;
      break;
    }
    bytes.remove_prefix(n);
    sse.feed(body, events);
  }
  if (!failed && !response.complete()) (void)response.finish_on_close();
  (void)sse.take_unterminated();
  // The SSE parser alone, on the raw bytes.
  tandem::loadgen::SseParser raw;
  raw.feed(std::string_view(reinterpret_cast<const char*>(data), size), events);
  return 0;
}
