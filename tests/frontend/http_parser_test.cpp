// The HTTP server's request parsing fed bytes with no socket (frontend/http_parser.h), as the fuzz
// target tests/fuzz/http_request_fuzz.cpp does.
#include "frontend/http_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::frontend {
namespace {

TEST(HttpParser, CompleteRequestWithHeadersLowerCasedAndPath) {
  const std::string bytes =
      "POST /v1/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
      "X-Twice: 1\r\nx-twice: 2\r\nContent-Length: 2\r\n\r\n{}GET /health HTTP/1.1\r\n\r\n";
  HttpRequest request;
  size_t consumed = 0;
  ASSERT_EQ(parse_http_request(bytes, 1024, 16384, &request, &consumed), HttpParseResult::kComplete);
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.target, "/v1/completions?x=1");
  EXPECT_EQ(request.path, "/v1/completions");
  ASSERT_NE(request.header("content-type"), nullptr);
  EXPECT_EQ(*request.header("content-type"), "application/json");
  EXPECT_EQ(*request.header("x-twice"), "2");  // the last of a repeated header
  EXPECT_EQ(request.body, "{}");
  EXPECT_FALSE(request.peer_is_loopback);
  // The pipelined second request starts where the first ended.
  ASSERT_EQ(parse_http_request(std::string_view(bytes).substr(consumed), 1024, 16384, &request, &consumed),
            HttpParseResult::kComplete);
  EXPECT_EQ(request.path, "/health");
  EXPECT_EQ(request.body, "");
}

TEST(HttpParser, ChunkedBodyIsJoined) {
  HttpRequest request;
  size_t consumed = 0;
  ASSERT_EQ(parse_http_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                               1024, 16384, &request, &consumed),
            HttpParseResult::kComplete);
  EXPECT_EQ(request.body, "abcde");
}

TEST(HttpParser, IncompleteTooLargeAndMalformed) {
  HttpRequest request;
  size_t consumed = 0;
  EXPECT_EQ(parse_http_request("GET / HTTP/1.1\r\nHost: a\r\n", 1024, 16384, &request, &consumed),
            HttpParseResult::kIncomplete);
  EXPECT_EQ(parse_http_request("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1024, 16384, &request, &consumed),
            HttpParseResult::kIncomplete);
  // Refused on the declared length, before any body byte arrives (the server answers 413).
  EXPECT_EQ(parse_http_request("POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", 1024, 16384, &request, &consumed),
            HttpParseResult::kTooLarge);
  EXPECT_EQ(parse_http_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" +
                                   std::string(0x800, 'a') + "\r\n0\r\n\r\n",
                               1024, 16384, &request, &consumed),
            HttpParseResult::kTooLarge);
  // Headers over the limit (the server answers 431), however they end.
  const std::string long_header = "GET / HTTP/1.1\r\nX-Long: " + std::string(300, 'h') + "\r\n\r\n";
  EXPECT_EQ(parse_http_request(long_header, 1024, 256, &request, &consumed), HttpParseResult::kHeaderTooLarge);
  EXPECT_EQ(parse_http_request(long_header, 1024, 16384, &request, &consumed), HttpParseResult::kComplete);
  EXPECT_EQ(parse_http_request("NOT HTTP\r\n\r\n", 1024, 16384, &request, &consumed), HttpParseResult::kMalformed);
  EXPECT_EQ(parse_http_request("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 1024, 16384, &request, &consumed),
            HttpParseResult::kMalformed);
}

}  // namespace
}  // namespace tandem::frontend
