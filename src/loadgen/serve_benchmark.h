// `tandem bench serve` as a library: options, their validation (every error names its flag and comes
// before any request is sent), the sweep over request rates, and the result file.
// Thread-safety: one benchmark per thread; nothing shared.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "loadgen/arrivals.h"
#include "loadgen/dataset.h"
#include "loadgen/metrics.h"
#include "loadgen/openai_client.h"
#include "loadgen/progress.h"
#include "loadgen/token_codec.h"
#include "common/status.h"

namespace tandem::loadgen {

struct ServeBenchmarkOptions {
  ClientOptions client;
  std::string dataset = "random";  // random | prefix | jsonl
  RandomDatasetOptions random;
  PrefixDatasetOptions prefix;
  JsonlDatasetOptions jsonl;
  std::string tokenizer;  // spec for open_token_codec; empty means "the --model directory"
  int32_t num_prompts = 1000;
  std::vector<double> request_rates = {kInfiniteRate};
  double burstiness = 1.0;
  int32_t max_concurrency = 0;  // 0 = unlimited
  uint64_t seed = 0;
  int32_t num_warmups = 1;  // sent one at a time before each sweep; the first failing aborts the run
  std::vector<double> percentiles = {90, 99};
  std::vector<std::string> goodput;  // "ttft:MS" items
  std::string save_result;  // path of the result file; empty for none
  std::string label;        // the series name in reports
  bool scrape_metrics = true;
  ProgressMode progress = ProgressMode::kAuto;
  double progress_interval_s = 5.0;
  double connect_timeout_s = 5.0;
};

// "1,2,4,inf" -> rates. InvalidArgument for a non-positive or unparsable entry.
StatusOr<std::vector<double>> parse_request_rates(const std::string& text);
// "90,99" -> percentiles in [0, 100].
StatusOr<std::vector<double>> parse_percentiles(const std::string& text);

// Checks everything that can be checked without the network. The message starts with the flag.
Status validate_options(const ServeBenchmarkOptions& options);

// The prompts of the run, from options.dataset. codec may be null only for jsonl.
StatusOr<std::vector<BenchRequest>> build_dataset(const ServeBenchmarkOptions& options, const TokenCodec* codec);

// One rate of a sweep, measured.
struct RunRecord {
  double request_rate = 0;
  int64_t run_start_ns = 0;
  double duration_s = 0;
  std::string started_at;  // ISO 8601 UTC wall clock
  std::vector<RequestResult> results;
  RunMetrics metrics;
  bool have_server_metrics = false;
  std::map<std::string, double> server_metrics_delta;
};

// Runs the warm-up and then one run per request rate, printing each run's table to out and progress to
// stderr. Returns the result document (also written to options.save_result after every run, so an
// interrupted sweep keeps what it measured). Unavailable when the warm-up fails.
StatusOr<nlohmann::json> run_serve_benchmark(const ServeBenchmarkOptions& options, OpenAIClient& client,
                                             const std::vector<BenchRequest>& requests, const TokenCodec* codec,
                                             std::FILE* out);

// The JSON of one run (see docs/benchmarks.md for every field).
nlohmann::json run_to_json(const RunRecord& run, const ServeBenchmarkOptions& options, const TokenCodec* codec);
nlohmann::json config_to_json(const ServeBenchmarkOptions& options, const TokenCodec* codec);

// Writes text to path atomically (temp file + rename). Unavailable with the reason when it cannot.
Status write_file_atomically(const std::string& path, const std::string& text);

}  // namespace tandem::loadgen
