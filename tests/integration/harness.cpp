// Serving test harness (see harness.h).
#include "harness.h"

#include <cstdlib>

#include <signal.h>
#include <sys/prctl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/socket.h"
#include "testing/wait.h"

namespace tandem::testing {

std::string tandem_binary() {
  const char* env = std::getenv("TANDEM_BINARY");
  return env && *env ? env : TANDEM_BINARY;
}


namespace fs = std::filesystem;

HttpResponse http(int port, const std::string& method, const std::string& path, const std::string& body,
                  const std::vector<std::pair<std::string, std::string>>& headers, int timeout_ms) {
  HttpResponse response;
  auto fd = net::dial("127.0.0.1:" + std::to_string(port), 2000);
  if (!fd.ok()) return response;
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string request = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  for (const auto& [name, value] : headers) request += name + ": " + value + "\r\n";
  if (!body.empty() || method == "POST") request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  request += "\r\n" + body;
  (void)net::write_full(*fd, request.data(), request.size(), "frontend");
  std::string raw;
  char buffer[65536];
  // timeout_ms bounds the whole exchange (a stream that keeps going is cut there: a disconnect).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = recv(*fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    raw.append(buffer, static_cast<size_t>(n));
  }
  close(*fd);
  size_t header_end = raw.find("\r\n\r\n");
  if (header_end == std::string::npos) return response;
  std::istringstream head(raw.substr(0, header_end));
  std::string line;
  std::getline(head, line);
  if (line.size() > 12) response.status = std::atoi(line.substr(9, 3).c_str());
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    response.headers[name] = value;
  }
  std::string rest = raw.substr(header_end + 4);
  if (response.headers["transfer-encoding"] == "chunked") {
    size_t pos = 0;
    while (pos < rest.size()) {
      size_t eol = rest.find("\r\n", pos);
      if (eol == std::string::npos) break;
      size_t size = std::stoul(rest.substr(pos, eol - pos), nullptr, 16);
      if (size == 0) break;
      response.body += rest.substr(eol + 2, size);
      pos = eol + 2 + size + 2;
    }
  } else {
    response.body = rest;
  }
  return response;
}

std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> events;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    events.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return events;
}

Process::Process(std::vector<std::string> argv, const std::string& log_path) {
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
}

Process::Process(Process&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    kill_now();
    pid_ = other.pid_;
    other.pid_ = -1;
  }
  return *this;
}
Process::~Process() { kill_now(); }

void Process::kill_now() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Process::terminate() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill_now();
}

bool Process::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
    return false;
  }
  return true;
}

Cluster::Cluster(std::vector<std::string> frontend_args) {
  char tmpl[] = "/tmp/tandem-test-XXXXXX";
  log_dir_ = mkdtemp(tmpl);
  std::string ready = log_dir_ + "/ready.json";
  std::vector<std::string> argv = {tandem_binary(), "--log-level", "info", "frontend", "--host", "127.0.0.1",
                                   "--port", "0", "--ready-file", ready};
  if (std::find(frontend_args.begin(), frontend_args.end(), "--heartbeat-timeout-ms") == frontend_args.end()) {
    argv.insert(argv.end(), {"--heartbeat-timeout-ms", "2000"});
  }
  argv.insert(argv.end(), frontend_args.begin(), frontend_args.end());
  frontend_ = Process(argv, log_dir_ + "/frontend.log");
  // Up to 2 minutes: a frontend given --tokenizer loads it before it listens, which under ASan on a
  // busy 2-core machine took over the 5 s this wait once allowed (the test then polled port 0 and
  // reported that no worker registered).
  for (int i = 0; i < 12000 && http_port_ == 0 && frontend_.running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::ifstream in(ready);
    if (!in) continue;
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) continue;
    http_port_ = j.value("http_port", 0);
    registry_port_ = j.value("registry_port", 0);
  }
}

Cluster::~Cluster() {
  for (auto& w : workers_) w.kill_now();
  frontend_.kill_now();
  if (!std::getenv("TANDEM_KEEP_TEST_LOGS")) fs::remove_all(log_dir_);
}

int Cluster::add_worker(const std::string& role, std::vector<std::string> args) {
  std::string id = role + "-" + std::to_string(next_worker_++);
  std::vector<std::string> argv = {tandem_binary(), "--log-level", "info", "worker", "--role", role};
  if (worker_registry_.empty()) {
    argv.insert(argv.end(), {"--frontend", registry()});
  } else {
    argv.insert(argv.end(), worker_registry_.begin(), worker_registry_.end());
  }
  argv.insert(argv.end(), {"--worker-id", id, "--heartbeat-ms", "100", "--threads", "1"});
  argv.insert(argv.end(), args.begin(), args.end());
  workers_.emplace_back(argv, log_dir_ + "/" + id + ".log");
  return static_cast<int>(workers_.size()) - 1;
}

std::string Cluster::log(const std::string& name) const { return read_file(log_dir_ + "/" + name + ".log"); }

ServeProcess::ServeProcess(const std::string& name, const std::vector<std::string>& args) {
  std::string tmpl = "/tmp/tandem-" + name + "-XXXXXX";
  dir_ = mkdtemp(tmpl.data());
  port_ = free_port();
  std::vector<std::string> argv = {tandem_binary(), "serve", "--port", std::to_string(port_)};
  argv.insert(argv.end(), args.begin(), args.end());
  process_ = Process(argv, dir_ + "/serve.log");
}

ServeProcess::~ServeProcess() {
  process_.kill_now();
  if (!std::getenv("TANDEM_KEEP_TEST_LOGS")) fs::remove_all(dir_);
}

bool ServeProcess::wait_for_workers(int count, int timeout_ms) {
  return eventually([&] { return metric_value(http(port_, "GET", "/metrics").body, "tandem_workers") >= count; },
                    timeout_ms, 100);
}

bool eventually(const std::function<bool()>& condition, int timeout_ms, int poll_ms) {
  return wait_until(condition, std::chrono::milliseconds(timeout_ms), std::chrono::milliseconds(poll_ms));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

int connect_loopback(int port, int receive_buffer_bytes) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (receive_buffer_bytes > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof(receive_buffer_bytes));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string raw_peer_gets(int port, const std::string& bytes) {
  const int fd = connect_loopback(port);
  if (fd < 0) return "connect failed";
  send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string got;
  char buffer[256];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) got.append(buffer, static_cast<size_t>(n));
  if (n < 0 && errno != ECONNRESET) got += "<not closed>";
  close(fd);
  return got;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string shell(const std::string& command, int* status) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  int rc = pipe ? pclose(pipe) : -1;
  if (status) *status = rc;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string random_prompt_ids(int n, int seed) {
  std::string out;
  unsigned x = static_cast<unsigned>(seed) * 2654435761u + 12345;
  for (int i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    out += (i ? "," : "") + std::to_string(1000 + (x >> 8) % 20000);
  }
  return out;
}

std::string find_program(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/bin:/usr/sbin:/usr/local/bin";
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

EtcdServer::EtcdServer() {
  char tmpl[] = "/tmp/tandem-etcd-XXXXXX";
  dir_ = mkdtemp(tmpl);
  client_port_ = free_port();
  peer_port_ = free_port();
  ok_ = available() && start();
}

EtcdServer::~EtcdServer() {
  process_.kill_now();
  if (!std::getenv("TANDEM_KEEP_TEST_LOGS")) fs::remove_all(dir_);
}

bool EtcdServer::start() {
  const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  process_ = Process({find_program("etcd"), "--name", "test", "--data-dir", dir_ + "/data", "--listen-client-urls", client,
                      "--advertise-client-urls", client, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                      "--initial-cluster", "test=" + peer, "--logger", "zap", "--log-level", "warn"},
                     dir_ + "/etcd.log");
  for (int i = 0; i < 200; ++i) {
    HttpResponse r = http(client_port_, "POST", "/v3/kv/range", R"({"key":"AA=="})", {}, 1000);
    // 400 "user name is empty": up, with authentication on.
    if (r.status == 200 || r.status == 400) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void EtcdServer::stop() { process_.kill_now(); }

std::string EtcdServer::ctl(const std::string& args, int* status) {
  return shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=" + endpoint() + " --command-timeout=5s" +
                   (ctl_user_.empty() ? "" : " --user '" + ctl_user_ + "'") + " " + args + " 2>&1",
               status);
}

std::map<std::string, std::string> EtcdServer::get_prefix(const std::string& prefix) {
  std::string out = shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=" + endpoint() +
                          (ctl_user_.empty() ? "" : " --user '" + ctl_user_ + "'") +
                          " --command-timeout=2s get --prefix '" + prefix + "' 2>/dev/null");
  std::map<std::string, std::string> kvs;
  std::stringstream in(out);
  std::string key, value;
  while (std::getline(in, key) && std::getline(in, value)) kvs[key] = value;
  return kvs;
}

bool EtcdServer::put(const std::string& key, const std::string& value) {
  int status = 0;
  std::string out = shell("ETCDCTL_API=3 " + find_program("etcdctl") + " --endpoints=" + endpoint() +
                          (ctl_user_.empty() ? "" : " --user '" + ctl_user_ + "'") +
                          " --command-timeout=2s put '" + key + "' '" + value + "' 2>&1", &status);
  return status == 0 && out == "OK";
}

NatsServer::NatsServer() {
  char tmpl[] = "/tmp/tandem-nats-XXXXXX";
  dir_ = mkdtemp(tmpl);
  port_ = free_port();
  monitor_port_ = free_port();
  ok_ = available() && start();
}

NatsServer::~NatsServer() {
  process_.kill_now();
  if (!std::getenv("TANDEM_KEEP_TEST_LOGS")) fs::remove_all(dir_);
}

bool NatsServer::start() {
  process_ = Process({find_program("nats-server"), "-js", "-a", "127.0.0.1", "-p", std::to_string(port_), "-m",
                      std::to_string(monitor_port_), "-sd", dir_ + "/store"},
                     dir_ + "/nats.log");
  for (int i = 0; i < 200; ++i) {
    if (http(monitor_port_, "GET", "/healthz", "", {}, 1000).status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void NatsServer::stop() { process_.kill_now(); }

int64_t NatsServer::stream_messages(const std::string& stream) {
  auto j = nlohmann::json::parse(http(monitor_port_, "GET", "/jsz?accounts=true&streams=true", "", {}, 2000).body, nullptr, false);
  if (!j.is_object() || !j.contains("account_details")) return -1;
  for (const auto& account : j["account_details"]) {
    for (const auto& st : account.value("stream_detail", nlohmann::json::array())) {
      if (st.value("name", "") == stream) return st["state"].value("messages", int64_t{0});
    }
  }
  return -1;
}

std::string Cluster::metrics() { return http(http_port_, "GET", "/metrics").body; }

double metric_value(const std::string& text, const std::string& name, const std::string& label_filter) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.compare(0, name.size(), name) != 0) continue;
    char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    size_t space = line.rfind(' ');
    std::string series = line.substr(0, space);
    if (!label_filter.empty() && series.find(label_filter) == std::string::npos) continue;
    sum += std::atof(line.substr(space + 1).c_str());
  }
  return sum;
}

double Cluster::metric(const std::string& name, const std::string& label_filter) {
  return metric_value(metrics(), name, label_filter);
}

bool Cluster::wait_for_workers(int count, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (metric("tandem_workers") >= count) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

bool Cluster::wait_no_leaked_blocks(int timeout_ms) {
  // Heartbeats come every 100 ms: let one taken after the last request arrive first.
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string m = metrics();
    if (metric_value(m, "tandem_worker_kv_blocks_used") == 0 && metric_value(m, "tandem_worker_kv_reservations") == 0 &&
        metric_value(m, "tandem_worker_prefills_in_flight") == 0 && metric_value(m, "tandem_requests_active") == 0) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace tandem::testing

namespace tandem::testing {

std::string check_device_failure_path(Cluster& cluster, int worker, const std::string& worker_log) {
  std::vector<std::thread> threads;
  std::atomic<int> failed_with_error{0};
  std::vector<std::string> bodies(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + random_prompt_ids(8, 40 + i) +
                                                           R"(],"max_tokens":200,"ignore_eos":true,"stream":true})", 60000);
      bodies[i] = std::to_string(r.status) + " " + r.body.substr(0, 2000);
      auto events = sse_events(r.body);
      const bool stream_error = r.status == 200 && events.size() >= 2 && events.back() == "[DONE]" &&
                                events[events.size() - 2].find("\"error\"") != std::string::npos;
      const bool refused = r.status >= 500 && r.body.find("\"error\"") != std::string::npos;
      if (stream_error || refused) ++failed_with_error;
    });
  }
  for (auto& t : threads) t.join();
  std::string problems;
  if (failed_with_error.load() != 3) {
    problems += std::to_string(failed_with_error.load()) + " of 3 requests failed with an error:\n" + bodies[0] + "\n" +
                bodies[1] + "\n" + bodies[2] + "\n";
  }
  bool exited = false;
  for (int i = 0; i < 600 && !exited; ++i) {
    exited = !cluster.worker(worker).running();
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string log = cluster.log(worker_log);
  if (!exited) return problems + "the worker did not exit within 30 s of its device failure\n" + log;
  if (cluster.worker(worker).exit_code() != 3) problems += "exit code " + std::to_string(cluster.worker(worker).exit_code()) + ", not 3\n";
  if (log.find("event=worker_device_failed") == std::string::npos) problems += "no event=worker_device_failed in the log\n";
  HttpResponse after = cluster.post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":3})", 10000);
  if (after.status != 503) problems += "after the exit the frontend answered " + std::to_string(after.status) + ": " + after.body + "\n";
  if (!problems.empty()) problems += log;
  return problems;
}

}  // namespace tandem::testing
