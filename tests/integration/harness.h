// Test harness for serving tests: starts the real `tandem` binary as frontend and worker processes
// on loopback with ephemeral ports, speaks HTTP to the frontend, reads its /metrics, and cleans up
// every process it started (SIGKILL at the end of the test).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
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
  // The exit code once running() or terminate() has reaped the process; -1 before, or when a signal
  // ended it.
  int exit_code() const { return exit_code_; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// A blocking TCP connection to 127.0.0.1:port, for what http() cannot do; -1 when refused. A
// receive_buffer_bytes above 0 sets SO_RCVBUF before connecting (a small one makes the server's writes
// block as soon as the test stops reading). The caller closes it.
int connect_loopback(int port, int receive_buffer_bytes = 0);
// What a peer that sends `bytes` on a fresh connection to 127.0.0.1:port gets back before the server
// closes it: "connect failed", or the bytes, with "<not closed>" added when it did not close within 10 s.
std::string raw_peer_gets(int port, const std::string& bytes);
// An unused TCP port on 127.0.0.1 (bound, read, released: another process may take it, rarely).
int free_port();
// Runs a shell command; its stdout (trailing newlines trimmed). `status` gets the exit status.
std::string shell(const std::string& command, int* status = nullptr);
// n pseudo-random ordinary token ids (1000..20999) as "a,b,c", a different prompt per seed: prompts that
// share no prefix, so routing decisions depend on their length alone.
std::string random_prompt_ids(int n, int seed);
// The path of an executable found in PATH or /usr/bin, /usr/sbin; "" when absent.
std::string find_program(const std::string& name);

// wait_until (testing/wait.h) with the times in milliseconds, as these tests count them: polls
// `condition` every `poll_ms` until it holds or `timeout_ms` has passed; its value at the deadline.
// Pass a longer poll_ms where the condition is costly (it starts a process).
bool eventually(const std::function<bool()>& condition, int timeout_ms = 5000, int poll_ms = 20);
// A file's whole text ("" when it cannot be read).
std::string read_file(const std::string& path);
// How many times `what` occurs in `text` (a log line counted per process, say).
size_t count_of(const std::string& text, const std::string& what);

// A real etcd (Debian's etcd-server) on loopback with a temporary data directory. stop() kills it
// and keeps the data, so start() brings the same cluster back on the same ports.
class EtcdServer {
 public:
  EtcdServer();  // starts; ok() tells whether it answers
  ~EtcdServer();
  bool ok() const { return ok_; }
  static bool available() { return !find_program("etcd").empty() && !find_program("etcdctl").empty(); }
  std::string url() const { return "etcd://127.0.0.1:" + std::to_string(client_port_); }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }
  bool start();
  void stop();
  // etcdctl (the reference client, not our code): `etcdctl get --prefix P` as key -> value.
  std::map<std::string, std::string> get_prefix(const std::string& prefix);
  bool put(const std::string& key, const std::string& value);
  // `etcdctl ARGS` on this server (ARGS as shell words); its output with stderr, `status` its exit status.
  std::string ctl(const std::string& args, int* status = nullptr);
  // Once etcd's authentication is on: the "user:password" etcdctl logs in with ("" = none).
  void set_ctl_user(const std::string& user_and_password) { ctl_user_ = user_and_password; }

 private:
  std::string ctl_user_;
  std::string dir_;
  int client_port_ = 0;
  int peer_port_ = 0;
  bool ok_ = false;
  Process process_;
};

// A real nats-server with JetStream (Debian's nats-server) on loopback, with a temporary store
// directory and a monitoring port; stop() kills it and keeps the store, so start() brings the same
// streams back on the same ports.
class NatsServer {
 public:
  NatsServer();
  ~NatsServer();
  bool ok() const { return ok_; }
  static bool available() { return !find_program("nats-server").empty(); }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  bool start();
  void stop();
  // Messages in a stream, from the server's monitoring endpoint (/jsz); -1 when it is not there.
  int64_t stream_messages(const std::string& stream);

 private:
  std::string dir_;
  int port_ = 0;
  int monitor_port_ = 0;
  bool ok_ = false;
  Process process_;
};

// `tandem serve` on loopback with an ephemeral port, its output in serve.log of a temporary directory
// that the destructor removes (kept with TANDEM_KEEP_TEST_LOGS); the destructor kills what still runs.
class ServeProcess {
 public:
  // Starts `tandem serve --port <free port> ARGS`; `name` names the directory (/tmp/tandem-NAME-XXXXXX).
  ServeProcess(const std::string& name, const std::vector<std::string>& args);
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  Process& process() { return process_; }
  // Waits until the frontend's /metrics counts `count` workers (tandem_workers); false on timeout.
  // The default is generous: under ASan `serve` on the demo model takes tens of seconds to start.
  bool wait_for_workers(int count, int timeout_ms = 120000);
  // serve.log so far: the supervisor's output and its children's.
  std::string log() const { return read_file(dir_ + "/serve.log"); }
  void terminate() { process_.terminate(); }  // SIGTERM: serve stops its children, then itself

 private:
  std::string dir_;
  int port_ = 0;
  Process process_;
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
  // Replaces "--frontend <registry>" in the argv of workers added from here on (cluster mode:
  // {"--registry", etcd_url, "--namespace", ns}).
  void set_worker_registry(std::vector<std::string> args) { worker_registry_ = std::move(args); }
  // The text of a process's log: "frontend" or a worker id ("decode-0").
  std::string log(const std::string& name) const;

 private:
  std::vector<std::string> worker_registry_;
  std::string log_dir_;
  Process frontend_;
  std::vector<Process> workers_;
  int http_port_ = 0;
  int registry_port_ = 0;
  int next_worker_ = 0;
};

// Sends three long streams to `cluster`, whose only worker was started with
// TANDEM_INJECT_DEVICE_FAULT_AT_STEP, and checks the device-failure path: every request fails with an
// OpenAI error (a stream's error event, or a 5xx error body when refused before streaming), the worker
// exits with code 3 and logs event=worker_device_failed, and the frontend then answers 503. Returns
// what went wrong, "" when nothing did.
std::string check_device_failure_path(Cluster& cluster, int worker, const std::string& worker_log);

double metric_value(const std::string& metrics_text, const std::string& name, const std::string& label_filter = "");

}  // namespace tandem::testing
