// The etcd client against a fake etcd on loopback that gives canned (malformed) answers: the inputs
// tests/fuzz/etcd_response_fuzz found, each must end in a Status, never a hang or an exception.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>

#include "cluster/etcd.h"
#include "common/socket.h"

namespace tandem::cluster {
namespace {

// Answers every connection with `answer` once the request has arrived, then closes.
class CannedEtcd {
 public:
  explicit CannedEtcd(std::string answer) : answer_(std::move(answer)) {
    listener_ = net::Listener::bind("127.0.0.1", 0).value();
    listener_->start([this](int fd, std::string) {
      std::string request;
      char buffer[4096];
      while (true) {
        size_t head_end = request.find("\r\n\r\n");
        size_t at = request.find("Content-Length: ");
        if (head_end != std::string::npos && at != std::string::npos &&
            request.size() >= head_end + 4 + std::strtoul(request.c_str() + at + 16, nullptr, 10)) {
          break;
        }
        ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      (void)net::write_full(fd, answer_.data(), answer_.size(), "client");
      shutdown(fd, SHUT_WR);
      while (recv(fd, buffer, sizeof(buffer), 0) > 0) {
      }
      close(fd);
    });
  }
  EtcdClient client() const {
    return EtcdClient(*parse_etcd_url("etcd://127.0.0.1:" + std::to_string(listener_->port())), 2000);
  }

 private:
  std::string answer_;
  std::unique_ptr<net::Listener> listener_;
};

std::string chunked_answer(const std::string& chunks) {
  return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks;
}

TEST(EtcdAnswers, ChunkSizeNearTwoToThe64_IsAnErrorNotAHang) {
  // 16 hex digits + CRLF: eol + 4 + size wraps to 0, and dechunk used to erase nothing and loop.
  CannedEtcd etcd(chunked_answer("ffffffffffffffec\r\n{}\r\n0\r\n\r\n"));
  const auto start = std::chrono::steady_clock::now();
  auto r = etcd.client().get_prefix("/tandem/");
  EXPECT_FALSE(r.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // A negative size reads as 2^64 - 1 through stoul; same path.
  CannedEtcd negative(chunked_answer("-1\r\n{}\r\n0\r\n\r\n"));
  EXPECT_FALSE(negative.client().grant_lease(5).ok());
}

TEST(EtcdAnswers, WatchMessageWithFieldsOfTheWrongType_EndsTheWatchWithUnavailable) {
  for (const std::string line : {R"({"result":{"canceled":"yes"}})", R"({"result":5})",
                                 R"({"result":{"events":[7]}})", R"({"result":{"events":[{"type":1}]}})"}) {
    SCOPED_TRACE(line);
    CannedEtcd etcd("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + line + "\n");
    std::atomic<bool> cancel{false};
    int calls = 0;
    Status s = etcd.client().watch_prefix("/tandem/", 1, [&](const std::vector<WatchEvent>&) { ++calls; }, cancel);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.to_string();
    EXPECT_NE(s.message().find("malformed watch message"), std::string::npos) << s.to_string();
    EXPECT_EQ(calls, 0);
  }
}

TEST(EtcdAnswers, WellFormedWatchEventsStillArrive) {
  CannedEtcd etcd(
      "HTTP/1.1 200 OK\r\n\r\n"
      R"({"result":{"events":[{"kv":{"key":"L2E=","value":"dg==","mod_revision":"4"}},{"type":"DELETE","kv":{"key":"L2I="}}]}})"
      "\n");
  std::atomic<bool> cancel{false};
  std::vector<WatchEvent> seen;
  Status s = etcd.client().watch_prefix("/", 1, [&](const std::vector<WatchEvent>& e) { seen = e; }, cancel);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);  // the stream ended
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].kv.key, "/a");
  EXPECT_EQ(seen[0].kv.value, "v");
  EXPECT_EQ(seen[0].kv.mod_revision, 4);
  EXPECT_TRUE(seen[1].deleted);
  EXPECT_EQ(seen[1].kv.key, "/b");
}

}  // namespace
}  // namespace tandem::cluster
