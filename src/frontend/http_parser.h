// The HTTP server's request parsing without its socket: Boost.Beast's request parser configured as the
// server's session configures it, and the conversion of a parsed message to the frontend's HttpRequest.
// Split out of http_server.cpp so that a test or a fuzz target (tests/fuzz) can feed it bytes.
// Internal to the frontend's HTTP code: it includes Beast, so only http_server.cpp, http_parser.cpp and
// tests include it (http.h stays free of Beast).
// Thread-safety: free functions over values.
#pragma once

#include <boost/beast/http.hpp>

#include <cstddef>
#include <string_view>

#include "frontend/http.h"

namespace tandem::frontend {

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;

// The request as the handler sees it: method, target, path (target before '?'), headers by lower-case
// name (a repeated header keeps its last value), and the body, moved out of `msg`.
HttpRequest to_http_request(BeastRequest& msg, bool peer_is_loopback);

enum class HttpParseResult {
  kComplete,    // *out holds the request; *consumed bytes of the input were used
  kIncomplete,  // the input ends inside the request
  kTooLarge,    // the body is over max_body_bytes (the server answers 413)
  kHeaderTooLarge,  // the request line and headers are over max_header_bytes (the server answers 431)
  kMalformed,   // not HTTP/1.x (the server closes the connection)
};

// Parses the first request in `bytes` with the server's limits.
HttpParseResult parse_http_request(std::string_view bytes, size_t max_body_bytes, size_t max_header_bytes,
                                   HttpRequest* out, size_t* consumed);

}  // namespace tandem::frontend
