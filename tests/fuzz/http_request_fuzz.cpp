// Fuzz target: the frontend's HTTP request parser (Beast as the server configures it, and the
// conversion to HttpRequest) on arbitrary bytes, pipelined requests included.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "frontend/http_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // A small body limit so that the 413 path is reached as often as the complete one.
  const size_t max_body = 4096;
  // And a small header limit, for the 431 path.
  const size_t max_header = 1024;
  for (int i = 0; i < 8 && !bytes.empty(); ++i) {
    tandem::frontend::HttpRequest request;
    size_t consumed = 0;
    auto result = tandem::frontend::parse_http_request(bytes, max_body, max_header, &request, &consumed);
    if (result != tandem::frontend::HttpParseResult::kComplete) break;
    if (consumed == 0 || consumed > bytes.size() || request.body.size() > max_body) __builtin_trap();
    (void)request.header("content-type");
    bytes.remove_prefix(consumed);
  }
  return 0;
}
