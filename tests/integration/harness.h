// Test harness for serving tests: starts the real `tandem` binary as frontend and worker processes
// on loopback with ephemeral ports, speaks HTTP to the frontend, reads its /metrics, and cleans up
// every process it started (SIGKILL at the end of the test).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace tandem::testing {

// The tandem binary the tests start: $TANDEM_BINARY when set (a bundle copied to a GPU machine), else
// the one this build made.
std::string tandem_binary();

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                             // de-chunked
};

// One HTTP/1.1 request on a fresh connection ("Connection: close"). status 0 on a transport error.
HttpResponse http(int port, const std::string& method, const std::string& path, const std::string& body = "",
                  const std::vector<std::pair<std::string, std::string>>& headers = {}, int timeout_ms = 60000);
// The `data:` payloads of an SSE body, in order ("[DONE]" included).
std::vector<std::string> sse_events(const std::string& body);

class Process {
 public:
  Process() = default;
  explicit Process(std::vector<std::string> argv, const std::string& log_path);
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  ~Process();
  pid_t pid() const { return pid_; }
  void kill_now();  // SIGKILL and reap
  void terminate(); // SIGTERM and reap (up to 10 s, then SIGKILL)
  bool running();

 private:
  pid_t pid_ = -1;
};

// A frontend plus workers.
class Cluster {
 public:
  explicit Cluster(std::vector<std::string> frontend_args = {});
  ~Cluster();
  int http_port() const { return http_port_; }
  std::string registry() const { return "127.0.0.1:" + std::to_string(registry_port_); }
  // Starts a worker; returns its index in workers().
  int add_worker(const std::string& role, std::vector<std::string> args);
  Process& worker(int index) { return workers_[index]; }
  Process& frontend() { return frontend_; }
  // Waits until `count` workers are registered (tandem_workers gauges); false on timeout. Generous:
  // under ASan a worker loading the real tokenizer takes tens of seconds to start.
  bool wait_for_workers(int count, int timeout_ms = 90000);
  std::string metrics();
  // Sum of every series of `name` whose label text contains `label_filter`.
  double metric(const std::string& name, const std::string& label_filter = "");
  // Polls until every worker reports no KV block in use and no reservation; false on timeout.
  bool wait_no_leaked_blocks(int timeout_ms = 5000);
  HttpResponse post(const std::string& path, const std::string& body, int timeout_ms = 60000) {
    return http(http_port_, "POST", path, body, {{"Content-Type", "application/json"}}, timeout_ms);
  }
  const std::string& log_dir() const { return log_dir_; }

 private:
  std::string log_dir_;
  Process frontend_;
  std::vector<Process> workers_;
  int http_port_ = 0;
  int registry_port_ = 0;
  int next_worker_ = 0;
};

double metric_value(const std::string& metrics_text, const std::string& name, const std::string& label_filter = "");

}  // namespace tandem::testing
