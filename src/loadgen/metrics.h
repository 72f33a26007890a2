// Metrics of one benchmark run, defined as `vllm bench serve` defines them (vllm/benchmarks/serve.py,
// calculate_metrics): TTFT, TPOT = (E2E - TTFT) / (output_tokens - 1) for requests with more than one
// output token, ITL = gaps between streamed chunks, E2E = start to last chunk; percentiles interpolate
// linearly between order statistics (numpy's default); goodput counts requests meeting every SLO given.
// Thread-safety: plain functions and values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "loadgen/openai_client.h"
#include "loadgen/token_codec.h"
#include "common/status.h"

namespace tandem::loadgen {

// Service-level objectives for goodput, in milliseconds; a request is good when it meets all given.
struct SloConfig {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool any() const { return ttft_ms || tpot_ms || e2el_ms; }
};

// Parses "ttft:MS tpot:MS e2el:MS" items (any subset, each once). InvalidArgument names the bad item.
StatusOr<SloConfig> parse_slo(const std::vector<std::string>& items);

struct LatencySummary {
  double mean_ms = 0, median_ms = 0, std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (p, value) for each requested p
};

struct RunMetrics {
  int32_t completed = 0;  // successful requests (vLLM's "completed")
  int32_t failed = 0;
  std::map<std::string, int32_t> failure_reasons;  // reason -> count
  double duration_s = 0;
  int64_t total_input_tokens = 0;   // over successful requests
  int64_t total_output_tokens = 0;
  double request_throughput = 0;    // completed / duration
  std::optional<double> request_goodput;  // good / duration, when SLOs are given
  int32_t good_requests = 0;
  double input_throughput = 0;
  double output_throughput = 0;
  double total_token_throughput = 0;
  double peak_output_throughput = 0;  // most output tokens in any one-second window of the run
  int32_t peak_concurrent_requests = 0;
  // Successful requests whose usage.prompt_tokens != prompt_len + the special tokens the server adds
  // (meaningful for /v1/completions; a chat template adds more).
  int32_t prompt_len_mismatches = 0;
  LatencySummary ttft, tpot, itl, e2el;
  // Output tokens per second over the run, in buckets of timeline_bucket_s from the run start.
  double timeline_bucket_s = 1.0;
  std::vector<double> output_throughput_timeline;
};

// Output tokens of a successful request: the server's usage when it sent one, else the codec's count of
// the generated text (vLLM's fallback), else the number of text chunks.
int32_t output_tokens_of(const RequestResult& r, const TokenCodec* codec);
// TPOT of a successful request in seconds; 0 when it produced at most one token (as vLLM).
double tpot_s_of(const RequestResult& r, int32_t output_tokens);

// Linear-interpolation percentile (numpy's default); 0 for no values. p in [0, 100].
double percentile(std::vector<double> values, double p);

RunMetrics compute_metrics(const std::vector<RequestResult>& results, int64_t run_start_ns, double duration_s,
                           const std::vector<double>& percentiles, const SloConfig& slo, const TokenCodec* codec);

// The table `vllm bench serve` prints, with our additions (failures by reason, input throughput, E2E).
std::string format_metrics_table(const RunMetrics& metrics, const std::string& title, int32_t max_concurrency,
                                 double request_rate);

// "p99", "p99.9": the key suffix vLLM uses for a percentile.
std::string percentile_name(double p);

}  // namespace tandem::loadgen
