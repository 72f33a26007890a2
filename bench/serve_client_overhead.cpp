// How much `tandem bench serve`'s client distorts what it measures. A stub OpenAI server (its own
// thread, same process) answers every request at once with N streamed tokens, each its own write, and
// records when it wrote each; the client loads it and we compare:
//   - sustained streamed requests/s (at an infinite rate with a concurrency cap, and at a fixed rate);
//   - timestamp error: how far the client's timestamp of a chunk lies outside [just before, just after] the
//     server's write of it (same clock), so a stub thread preempted around its write is not blamed on
//     the client; negative would mean a chunk seen before it was sent (never observed);
//   - dispatch lag: when a request actually left minus its scheduled arrival time (meaningless at rate inf,
//     where every request is due at once and waits for a concurrency slot).
// Each with kernel arrival timestamps (the default) and with user-space read times, for comparison.
// Usage: serve_client_overhead [--requests N] [--tokens N] [--rate R] [--concurrency C]
//        serve_client_overhead --serve-only   (just run the stub and print its URL, for trying the CLI)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "loadgen/arrivals.h"
#include "loadgen/metrics.h"
#include "loadgen/openai_client.h"
#include "stub_openai_server.h"

using namespace tandem::loadgen;

namespace {

// CPU seconds (user + system) this thread has used.
double thread_cpu_s() {
  rusage usage{};
  getrusage(RUSAGE_THREAD, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

struct Summary {
  double requests_per_s = 0;
  double client_cpu_us_per_request = 0;  // the client's event-loop thread, user + system
  int failed = 0;
  std::vector<double> error_ms;  // per chunk
  std::vector<double> lag_ms;    // per request
};

Summary measure(int num_requests, int num_tokens, double rate, int concurrency, bool kernel_timestamps) {
  testing::StubOpenAIServer server([num_tokens](const std::string&) {
    testing::StubScript s;
    s.gaps_ms.assign(static_cast<size_t>(num_tokens), 0.0);
    return s;
  });
  ClientOptions options;
  options.base_url = server.base_url();
  options.model = "stub";
  options.keep_generated_text = false;
  options.kernel_timestamps = kernel_timestamps;
  auto client = std::move(OpenAIClient::create(options).value());
  std::vector<BenchRequest> requests;
  for (int i = 0; i < num_requests; ++i) requests.push_back({"r" + std::to_string(i), 1, num_tokens});
  auto offsets = make_arrival_offsets(num_requests, rate, 1.0, 0);
  int64_t start_ns = 0;
  const double cpu_before = thread_cpu_s();
  auto results = client->run(requests, offsets, concurrency, {}, start_ns);
  const double client_cpu_s = thread_cpu_s() - cpu_before;
  int64_t end_ns = start_ns;
  for (const auto& r : results) end_ns = std::max(end_ns, r.done_ns);
  std::map<std::string, testing::StubRecord> sent;
  for (auto& rec : server.wait_for_records(results.size())) sent[rec.prompt] = std::move(rec);
  Summary s;
  s.requests_per_s = num_requests / (static_cast<double>(end_ns - start_ns) * 1e-9);
  s.client_cpu_us_per_request = client_cpu_s * 1e6 / num_requests;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.success) {
      ++s.failed;
      continue;
    }
    s.lag_ms.push_back(static_cast<double>(r.start_ns - r.scheduled_ns) * 1e-6);
    const auto& truth = sent[requests[i].prompt];
    for (size_t k = 0; k < std::min(truth.sent_ns.size(), r.chunk_ns.size()); ++k) {
      const int64_t t = r.chunk_ns[k];
      const int64_t error_ns = t < truth.sent_ns[k] ? t - truth.sent_ns[k] : std::max<int64_t>(0, t - truth.sent_end_ns[k]);
      s.error_ms.push_back(static_cast<double>(error_ns) * 1e-6);
    }
  }
  return s;
}

void print(const char* name, const Summary& s) {
  auto stats = [](std::vector<double> v) {
    if (v.empty()) return std::string("n/a");
    char line[160];
    std::snprintf(line, sizeof(line), "mean %.3f  p50 %.3f  p99 %.3f  max %.3f", 
                  std::accumulate(v.begin(), v.end(), 0.0) / v.size(), percentile(v, 50), percentile(v, 99),
                  *std::max_element(v.begin(), v.end()));
    return std::string(line);
  };
  std::printf("%s\n  sustained: %.0f streamed requests/s, %d failed; client CPU %.0f us per request\n"
              "  timestamp error (ms): %s\n  dispatch lag (ms):    %s\n",
              name, s.requests_per_s, s.failed, s.client_cpu_us_per_request, stats(s.error_ms).c_str(),
              stats(s.lag_ms).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int num_requests = 10000, num_tokens = 8, concurrency = 64;
  double rate = 2000;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() { return i + 1 < argc ? argv[++i] : "0"; };
    if (arg == "--requests") num_requests = std::atoi(next());
    else if (arg == "--tokens") num_tokens = std::atoi(next());
    else if (arg == "--rate") rate = std::atof(next());
    else if (arg == "--concurrency") concurrency = std::atoi(next());
    else if (arg == "--serve-only") {
      testing::StubOpenAIServer server([num_tokens](const std::string&) {
        testing::StubScript s;
        s.gaps_ms = testing::uniform_gaps(num_tokens, 20, 10);
        return s;
      }, /*record=*/false);
      std::printf("%s\n", server.base_url().c_str());
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::hours(1));
      return 0;
    } else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  std::printf("stub answers at once: %d requests x %d tokens, one write per token\n", num_requests, num_tokens);
  for (bool kernel : {true, false}) {
    const std::string clock = kernel ? "kernel arrival timestamps" : "user-space read timestamps";
    print(("rate inf, max concurrency " + std::to_string(concurrency) + ", " + clock).c_str(),
          measure(num_requests, num_tokens, tandem::loadgen::kInfiniteRate, concurrency, kernel));
    print(("Poisson rate " + std::to_string(static_cast<int>(rate)) + " req/s, no concurrency cap, " + clock).c_str(),
          measure(num_requests, num_tokens, rate, 0, kernel));
  }
  return 0;
}
