// Failures found or checked by the chaos work (issue 20, docs/reliability.md), end to end on the real
// `tandem` frontend and fake-engine workers: a client that stops reading its stream is dropped by the
// send bound and its request aborted on the worker (the blocks return); a worker stopped at once (two
// signals in a row) still tells its frontend it is leaving before its connection closes.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Sends a streamed completion on a connection with a 4 KiB receive buffer and never reads it.
int start_unread_stream(int port, int max_tokens) {
  const int fd = connect_loopback(port, /*receive_buffer_bytes=*/4096);
  if (fd < 0) return -1;
  const std::string body = R"({"prompt":[1,2,3],"max_tokens":)" + std::to_string(max_tokens) +
                           R"(,"stream":true,"ignore_eos":true})";
  const std::string request = "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Before the send bound, the frontend queued the whole reply for a client that read nothing and kept
// its connection for as long as the client did; the worker ran the request to its end.
TEST(Reliability, ClientThatStopsReading_IsDropped_AndItsRequestAbortedOnTheWorker) {
  Cluster cluster({"--http-send-timeout-s", "0.5"});
  // 60000 tokens at 1 ms a step: a minute of work unless the request is aborted.
  cluster.add_worker("both", {"--engine", "fake", "--fake-step-ms", "1"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const auto start = Clock::now();
  int fd = start_unread_stream(cluster.http_port(), 60000);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(eventually([&] { return cluster.metric("tandem_worker_kv_blocks_used") > 0; }, 5000));
  // Dropped by the send timeout (the socket buffers fill) or, were the worker faster than the kernel
  // lets the buffers grow, by the send-buffer limit; either way well before the request could end.
  EXPECT_TRUE(eventually(
      [&] {
        return cluster.metric("tandem_http_connections_closed_total", "reason=\"send_timeout\"") +
                   cluster.metric("tandem_http_connections_closed_total", "reason=\"send_buffer_full\"") >= 1;
      },
      30000));
  EXPECT_TRUE(cluster.wait_no_leaked_blocks(5000));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(40));
  ::close(fd);
  // The frontend serves on.
  EXPECT_EQ(cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":4})").status, 200);
}

// Two signals before the worker's loop wakes stop it at once; the frontend still hears "draining"
// (and stops routing there) before the connection closes, as before the worker's refactor.
TEST(Reliability, WorkerStoppedAtOnce_StillAnnouncesItsDrain) {
  Cluster cluster;
  int w = cluster.add_worker("both", {"--engine", "fake"});
  ASSERT_TRUE(cluster.wait_for_workers(1));
  const pid_t pid = cluster.worker(w).pid();
  ASSERT_GT(pid, 0);
  // Both pending when the process resumes, so its signal thread takes them back to back, before the
  // worker's loop wakes; different signals, so that neither is merged into the other while pending.
  ::kill(pid, SIGSTOP);
  ::kill(pid, SIGTERM);
  ::kill(pid, SIGINT);
  ::kill(pid, SIGCONT);
  ASSERT_TRUE(eventually([&] { return !cluster.worker(w).running(); }, 15000));
  ASSERT_TRUE(eventually([&] { return cluster.log("frontend").find("event=worker_lost worker_id=both-0") != std::string::npos; },
                         5000));
  const std::string log = cluster.log("frontend");
  const size_t draining = log.find("event=worker_draining worker_id=both-0");
  EXPECT_NE(draining, std::string::npos) << log;
  EXPECT_LT(draining, log.find("event=worker_lost worker_id=both-0"));
}

}  // namespace
}  // namespace tandem::testing
