// HTTP response framing and SSE parsing, fed whole and split at every byte.
#include <gtest/gtest.h>

#include "loadgen/http_stream.h"

namespace tandem::loadgen {
namespace {

struct Parsed {
  Status status;
  std::string body;
  bool complete = false;
  int code = 0;
  bool keep_alive = false;
};

Parsed parse_split(const std::string& wire, size_t split) {
  HttpResponseParser parser;
  Parsed p;
  p.status = parser.feed(std::string_view(wire).substr(0, split), p.body);
  if (p.status.ok()) p.status = parser.feed(std::string_view(wire).substr(split), p.body);
  p.complete = parser.complete();
  p.code = parser.status_code();
  p.keep_alive = parser.keep_alive();
  return p;
}

TEST(HttpResponseParser, ChunkedBodySplitAnywhere) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\nc;ext=1\r\n, streaming!\r\n0\r\nTrailer: x\r\n\r\n";
  for (size_t split = 0; split <= wire.size(); ++split) {
    Parsed p = parse_split(wire, split);
    ASSERT_TRUE(p.status.ok()) << split << " " << p.status.to_string();
    EXPECT_EQ(p.body, "hello, streaming!") << split;
    EXPECT_TRUE(p.complete) << split;
    EXPECT_EQ(p.code, 200);
    EXPECT_TRUE(p.keep_alive);
  }
}

TEST(HttpResponseParser, ContentLengthAndConnectionClose) {
  const std::string wire = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops";
  Parsed p = parse_split(wire, 20);
  ASSERT_TRUE(p.status.ok());
  EXPECT_EQ(p.code, 500);
  EXPECT_EQ(p.body, "oops");
  EXPECT_TRUE(p.complete);
  EXPECT_FALSE(p.keep_alive);
}

TEST(HttpResponseParser, CloseDelimitedBodyEndsOnClose) {
  HttpResponseParser parser;
  std::string body;
  ASSERT_TRUE(parser.feed("HTTP/1.0 200 OK\r\n\r\nabc", body).ok());
  EXPECT_FALSE(parser.complete());
  EXPECT_TRUE(parser.finish_on_close().ok());
  EXPECT_EQ(body, "abc");
}

TEST(HttpResponseParser, CutShortChunkedBodyIsAnError) {
  HttpResponseParser parser;
  std::string body;
  ASSERT_TRUE(parser.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", body).ok());
  EXPECT_EQ(parser.finish_on_close().code(), StatusCode::kUnavailable);
}

TEST(HttpResponseParser, GarbageIsCorruption) {
  HttpResponseParser parser;
  std::string body;
  EXPECT_EQ(parser.feed("SSH-2.0-OpenSSH\r\n\r\n", body).code(), StatusCode::kCorruption);
  HttpResponseParser chunked;
  EXPECT_EQ(chunked.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", body).code(), StatusCode::kCorruption);
}

// tests/fuzz/sse_stream_fuzz: a status line without a space overflowed a pointer (UBSan).
TEST(HttpResponseParser, StatusLineWithoutASpaceIsCorruption) {
  HttpResponseParser parser;
  std::string body;
  Status s = parser.feed("HTTP/\xc6\xd1\xcf\xdf\xcd\xcfOK\r\nConnection: close\r\n\r\n", body);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("bad HTTP status line"), std::string::npos);
}

TEST(SseParser, EventsSplitAnywhereWithCrLfAndMultiLineData) {
  const std::string stream = ": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata:line2\n\ndata: [DONE]\n\n";
  for (size_t split = 0; split <= stream.size(); ++split) {
    SseParser parser;
    std::vector<std::string> events;
    parser.feed(stream.substr(0, split), events);
    parser.feed(stream.substr(split), events);
    ASSERT_EQ(events.size(), 3u) << split;
    EXPECT_EQ(events[0], "{\"a\":1}");
    EXPECT_EQ(events[1], "line1\nline2");
    EXPECT_EQ(events[2], "[DONE]");
    EXPECT_EQ(parser.take_unterminated(), "");
  }
}

TEST(SseParser, UnterminatedLastEventIsKept) {
  SseParser parser;
  std::vector<std::string> events;
  parser.feed("data: [DONE]", events);
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(parser.take_unterminated(), "[DONE]");
}

}  // namespace
}  // namespace tandem::loadgen
