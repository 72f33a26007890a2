// serving_bench: load against a running Tandem frontend with token-id prompts, to measure the
// serving path itself (TTFT, inter-token latency, end-to-end latency, requests/s).
//   serving_bench --port 8000 --requests 200 --concurrency 8 --prompt-len 1200 --max-tokens 32 [--stream]
// Each client thread keeps one HTTP/1.1 connection alive and sends its requests one after another.
// Greedy sampling, ignore_eos, so every request produces exactly --max-tokens tokens.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/socket.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int port = 8000;
  int requests = 100;
  int concurrency = 1;
  int prompt_len = 16;
  int max_tokens = 16;
  bool stream = false;
  int seed = 0;
};

struct Sample {
  double ttft = 0, e2e = 0;
  std::vector<double> itl;
  bool ok = false;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}

// One request on a kept-alive socket; fills the sample. False if the connection broke.
bool run_one(int fd, const Options& o, const std::string& body, Sample* sample) {
  std::string request = "POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body;
  auto start = Clock::now();
  if (!tandem::net::write_full(fd, request.data(), request.size(), "frontend").ok()) return false;
  std::string raw;
  char buffer[65536];
  size_t header_end = std::string::npos;
  size_t content_length = 0;
  bool chunked = false;
  int events_seen = 0;
  Clock::time_point last;
  while (true) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) return false;
    auto now = Clock::now();
    raw.append(buffer, static_cast<size_t>(n));
    if (header_end == std::string::npos) {
      header_end = raw.find("\r\n\r\n");
      if (header_end == std::string::npos) continue;
      std::string head = raw.substr(0, header_end);
      sample->ok = head.find(" 200 ") != std::string::npos;
      chunked = head.find("chunked") != std::string::npos;
      size_t cl = head.find("Content-Length: ");
      if (cl != std::string::npos) content_length = std::strtoul(head.c_str() + cl + 16, nullptr, 10);
    }
    if (o.stream) {
      // Count token-carrying events as they arrive: each is one step's output.
      size_t pos = 0;
      int events = 0;
      while ((pos = raw.find("data: {\"choices\":[{", pos)) != std::string::npos) ++events, pos += 10;
      for (; events_seen < events; ++events_seen) {
        if (events_seen == 0) {
          sample->ttft = std::chrono::duration<double>(now - start).count();
        } else {
          sample->itl.push_back(std::chrono::duration<double>(now - last).count());
        }
        last = now;
      }
    }
    if (chunked ? raw.size() >= 5 && raw.compare(raw.size() - 5, 5, "0\r\n\r\n") == 0
                : raw.size() >= header_end + 4 + content_length) {
      break;
    }
  }
  sample->e2e = std::chrono::duration<double>(Clock::now() - start).count();
  if (!o.stream) sample->ttft = sample->e2e;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (a == "--port") o.port = next();
    else if (a == "--requests") o.requests = next();
    else if (a == "--concurrency") o.concurrency = next();
    else if (a == "--prompt-len") o.prompt_len = next();
    else if (a == "--max-tokens") o.max_tokens = next();
    else if (a == "--seed") o.seed = next();
    else if (a == "--stream") o.stream = true;
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  std::vector<Sample> samples(o.requests);
  std::atomic<int> next_request{0};
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < o.concurrency; ++t) {
    threads.emplace_back([&, t] {
      int fd = -1;
      std::mt19937 rng(o.seed * 1000 + t);
      while (true) {
        int r = next_request.fetch_add(1);
        if (r >= o.requests) break;
        std::string prompt;
        for (int k = 0; k < o.prompt_len; ++k) prompt += (k ? "," : "") + std::to_string(1000 + rng() % 20000);
        std::string body = "{\"prompt\":[" + prompt + "],\"max_tokens\":" + std::to_string(o.max_tokens) +
                           ",\"temperature\":0,\"ignore_eos\":true" + (o.stream ? ",\"stream\":true" : "") + "}";
        for (int attempt = 0; attempt < 2; ++attempt) {
          if (fd < 0) {
            auto dialed = tandem::net::dial("127.0.0.1:" + std::to_string(o.port), 2000);
            if (!dialed.ok()) break;
            fd = *dialed;
          }
          if (run_one(fd, o, body, &samples[r])) break;
          close(fd);
          fd = -1;
        }
      }
      if (fd >= 0) close(fd);
    });
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> ttft, e2e, itl;
  int ok = 0;
  for (const auto& s : samples) {
    if (!s.ok) continue;
    ++ok;
    ttft.push_back(s.ttft * 1e3);
    e2e.push_back(s.e2e * 1e3);
    for (double x : s.itl) itl.push_back(x * 1e3);
  }
  std::printf("requests=%d ok=%d concurrency=%d prompt_len=%d max_tokens=%d stream=%d seconds=%.2f req_per_s=%.1f "
              "out_tok_per_s=%.1f\n",
              o.requests, ok, o.concurrency, o.prompt_len, o.max_tokens, o.stream, seconds, ok / seconds,
              ok * o.max_tokens / seconds);
  std::printf("ttft_ms mean=%.2f p50=%.2f p99=%.2f | itl_ms mean=%.3f p50=%.3f p99=%.3f | e2e_ms mean=%.2f p50=%.2f p99=%.2f\n",
              mean(ttft), percentile(ttft, 0.5), percentile(ttft, 0.99), mean(itl), percentile(itl, 0.5),
              percentile(itl, 0.99), mean(e2e), percentile(e2e, 0.5), percentile(e2e, 0.99));
  return ok == o.requests ? 0 : 1;
}
