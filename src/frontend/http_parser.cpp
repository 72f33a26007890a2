// See http_parser.h.
#include "frontend/http_parser.h"

#include <boost/asio/buffer.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <string>

namespace tandem::frontend {

namespace http = boost::beast::http;

HttpRequest to_http_request(BeastRequest& msg, bool peer_is_loopback) {
  HttpRequest request;
  request.method = std::string(msg.method_string());
  request.target = std::string(msg.target());
  request.path = request.target.substr(0, request.target.find('?'));
  for (const auto& field : msg) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    request.headers[name] = std::string(field.value());
  }
  request.body = std::move(msg.body());
  request.peer_is_loopback = peer_is_loopback;
  return request;
}

HttpParseResult parse_http_request(std::string_view bytes, size_t max_body_bytes, size_t max_header_bytes,
                                   HttpRequest* out, size_t* consumed) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(max_body_bytes);
  parser.header_limit(static_cast<uint32_t>(std::min<size_t>(max_header_bytes, UINT32_MAX)));
  parser.eager(true);
  size_t used = 0;
  while (!parser.is_done()) {
    // The server's read loop would wait for more bytes here.
    if (used == bytes.size()) return HttpParseResult::kIncomplete;
    boost::beast::error_code ec;
    const size_t n = parser.put(boost::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
    used += n;
    if (ec == http::error::need_more || (!ec && n == 0)) return HttpParseResult::kIncomplete;
    if (ec == http::error::body_limit) return HttpParseResult::kTooLarge;
    if (ec == http::error::header_limit) return HttpParseResult::kHeaderTooLarge;
    if (ec) return HttpParseResult::kMalformed;
    // As the server's session: a declared length over the limit is refused once the header is read.
    if (parser.is_header_done() && parser.content_length() && *parser.content_length() > max_body_bytes) {
      return HttpParseResult::kTooLarge;
    }
  }
  *consumed = used;
  *out = to_http_request(parser.get(), false);
  return HttpParseResult::kComplete;
}

}  // namespace tandem::frontend
