// The load generator of `tandem bench serve`: sends BenchRequests to an OpenAI-compatible server with
// streaming (/v1/completions or /v1/chat/completions) at scheduled times, and records for each request
// when every streamed chunk arrived. Metrics are computed elsewhere (metrics.h) from these records.
//
// One thread does all network I/O (an Asio event loop inside run()): the client must add as little
// delay as possible between a chunk reaching the socket and its timestamp, and a single loop with no
// locks keeps that delay to one read. Asio stays in the .cpp so this header is cheap to include.
// Thread-safety: an OpenAIClient is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "loadgen/dataset.h"
#include "common/status.h"

namespace tandem::loadgen {

struct ClientOptions {
  std::string base_url = "http://127.0.0.1:8000";  // http://host[:port], no path
  std::string endpoint = "/v1/completions";        // or /v1/chat/completions (decides the body shape)
  std::string model;
  bool ignore_eos = false;
  double temperature = 0.0;
  std::string extra_body_json;       // a JSON object merged into every request body; empty for none
  double request_timeout_s = 3600.0;  // a request still streaming after this fails with a timeout
  bool keep_generated_text = true;
  // Timestamp chunks with the kernel's arrival time of their bytes (SO_TIMESTAMPNS) rather than when the
  // event loop read them; falls back to the read time where the kernel gives none.
  bool kernel_timestamps = true;
};

// What happened to one request. Times are steady-clock (CLOCK_MONOTONIC) nanoseconds, comparable with
// timestamps taken by another process on the same machine.
struct RequestResult {
  bool success = false;
  std::string error;       // why it failed; empty on success
  int http_status = 0;
  int32_t prompt_len = -1;  // expected prompt tokens (from the dataset); -1 unknown
  int32_t output_len = 0;   // max_tokens asked for; 0 = server's choice
  int64_t scheduled_ns = 0; // when the arrival process released it (before any concurrency wait)
  int64_t start_ns = 0;     // when the client began sending it (vLLM's `st`)
  std::vector<int64_t> chunk_ns;  // arrival of each streamed chunk that carried text
  int64_t done_ns = 0;      // end of the stream ([DONE] or end of body), or when the request failed
  int32_t usage_prompt_tokens = -1;      // from the server's usage, -1 if none was sent
  int32_t usage_completion_tokens = -1;
  std::string generated_text;

  // vLLM's definitions: TTFT is the first text chunk's arrival after start; latency (E2E) runs to the
  // last text chunk; ITLs are the gaps between consecutive text chunks. REQUIRES: !chunk_ns.empty()
  double ttft_s() const { return static_cast<double>(chunk_ns.front() - start_ns) * 1e-9; }
  double latency_s() const { return static_cast<double>(chunk_ns.back() - start_ns) * 1e-9; }
};

struct RunProgress {
  int32_t total = 0;
  int32_t completed = 0;  // succeeded or failed
  int32_t failed = 0;
  int32_t in_flight = 0;
  double elapsed_s = 0.0;
};
using ProgressFn = std::function<void(const RunProgress&)>;

class OpenAIClient {
 public:
  // Parses and resolves base_url. InvalidArgument for a URL that is not http://host[:port].
  static StatusOr<std::unique_ptr<OpenAIClient>> create(const ClientOptions& options);
  ~OpenAIClient();
  OpenAIClient(const OpenAIClient&) = delete;
  OpenAIClient& operator=(const OpenAIClient&) = delete;

  // Opens and closes one TCP connection. Unavailable (with the system's reason) when it cannot.
  Status check_reachable(double timeout_s);

  // GET path; the body when the server answers 200. For /metrics and /v1/models.
  StatusOr<std::string> get(const std::string& path, double timeout_s);

  // Sends requests[i] at run start + arrival_offsets_s[i], with at most max_concurrency in flight
  // (0 = unlimited), and returns one result per request in the same order. run_start_ns receives the
  // start of the run. progress (may be empty) is called on the I/O thread a few times a second.
  // REQUIRES: arrival_offsets_s.size() == requests.size(), offsets non-decreasing.
  std::vector<RequestResult> run(const std::vector<BenchRequest>& requests, const std::vector<double>& arrival_offsets_s,
                                 int32_t max_concurrency, const ProgressFn& progress, int64_t& run_start_ns);

  const ClientOptions& options() const;

  struct Impl;  // opaque: the Asio side, defined in the .cpp

 private:
  explicit OpenAIClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Steady-clock nanoseconds, the time base of RequestResult.
int64_t steady_now_ns();

}  // namespace tandem::loadgen
