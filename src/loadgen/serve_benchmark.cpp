// The sweep driver and result file of `tandem bench serve`.
#include "loadgen/serve_benchmark.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "loadgen/arrivals.h"
#include "loadgen/server_metrics.h"

namespace tandem::loadgen {
namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    items.push_back(item);
  }
  return items;
}

std::string utc_now_iso() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

nlohmann::json rate_json(double rate) { return std::isinf(rate) ? nlohmann::json("inf") : nlohmann::json(rate); }

double offset_s(int64_t t_ns, int64_t start_ns) { return static_cast<double>(t_ns - start_ns) * 1e-9; }

void add_latency(nlohmann::json& j, const std::string& name, const LatencySummary& s) {
  j["mean_" + name + "_ms"] = s.mean_ms;
  j["median_" + name + "_ms"] = s.median_ms;
  j["std_" + name + "_ms"] = s.std_ms;
  for (const auto& [p, v] : s.percentiles_ms) j[percentile_name(p) + "_" + name + "_ms"] = v;
}

}  // namespace

StatusOr<std::vector<double>> parse_request_rates(const std::string& text) {
  std::vector<double> rates;
  for (const std::string& item : split_list(text)) {
    if (item == "inf" || item == "Inf" || item == "INF") {
      rates.push_back(kInfiniteRate);
      continue;
    }
    char* end = nullptr;
    double rate = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || std::isnan(rate)) {
      return Status::InvalidArgument("'" + item + "' is not a rate (expected requests/s like 4, or inf)");
    }
    if (!(rate > 0)) return Status::InvalidArgument("'" + item + "': the rate must be positive (or inf)");
    rates.push_back(rate);
  }
  if (rates.empty()) return Status::InvalidArgument("no rate given");
  return rates;
}

StatusOr<std::vector<double>> parse_percentiles(const std::string& text) {
  std::vector<double> values;
  for (const std::string& item : split_list(text)) {
    char* end = nullptr;
    double p = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(p >= 0 && p <= 100)) {
      return Status::InvalidArgument("'" + item + "' is not a percentile in [0, 100]");
    }
    values.push_back(p);
  }
  return values;
}

Status validate_options(const ServeBenchmarkOptions& o) {
  if (o.dataset != "random" && o.dataset != "prefix" && o.dataset != "jsonl") {
    return Status::InvalidArgument("--dataset-name: unknown dataset '" + o.dataset + "' (use random, prefix or jsonl)");
  }
  if (o.num_prompts < 1) return Status::InvalidArgument("--num-prompts: must be at least 1");
  for (double rate : o.request_rates) {
    if (!(rate > 0)) return Status::InvalidArgument("--request-rate: must be positive (or inf)");
  }
  if (!(o.burstiness > 0) || std::isinf(o.burstiness)) return Status::InvalidArgument("--burstiness: must be a positive number");
  if (o.max_concurrency < 0) return Status::InvalidArgument("--max-concurrency: must be 0 (unlimited) or more");
  if (o.num_warmups < 0) return Status::InvalidArgument("--num-warmups: must be 0 or more");
  if (o.client.endpoint.empty() || o.client.endpoint.front() != '/') {
    return Status::InvalidArgument("--endpoint: '" + o.client.endpoint + "' must be a path such as /v1/completions");
  }
  if (!(o.client.request_timeout_s > 0)) return Status::InvalidArgument("--request-timeout: must be positive");
  if (o.dataset == "random") {
    if (o.random.input_len < 1) return Status::InvalidArgument("--random-input-len: must be at least 1");
    if (o.random.output_len < 1) return Status::InvalidArgument("--random-output-len: must be at least 1");
    if (!(o.random.range_ratio >= 0 && o.random.range_ratio < 1)) {
      return Status::InvalidArgument("--random-range-ratio: must be in [0, 1)");
    }
  } else if (o.dataset == "prefix") {
    if (o.prefix.prefix_len < 1) return Status::InvalidArgument("--prefix-len: must be at least 1");
    if (o.prefix.suffix_len < 1) return Status::InvalidArgument("--prefix-suffix-len: must be at least 1");
    if (o.prefix.num_prefixes < 1) return Status::InvalidArgument("--prefix-num-prefixes: must be at least 1");
    if (o.prefix.output_len < 1) return Status::InvalidArgument("--prefix-output-len: must be at least 1");
  } else {
    if (o.jsonl.path.empty()) return Status::InvalidArgument("--dataset-path: required with --dataset-name jsonl");
    if (!std::filesystem::is_regular_file(o.jsonl.path)) {
      return Status::InvalidArgument("--dataset-path: '" + o.jsonl.path + "' is not a readable file");
    }
    if (o.jsonl.default_output_len < 0) return Status::InvalidArgument("--jsonl-output-len: must be 0 or more");
  }
  auto slo = parse_slo(o.goodput);
  if (!slo.ok()) return Status::InvalidArgument("--goodput: " + slo.status().message());
  if (!o.save_result.empty()) {
    std::filesystem::path parent = std::filesystem::path(o.save_result).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent)) {
      return Status::InvalidArgument("--save-result: directory '" + parent.string() + "' does not exist");
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<BenchRequest>> build_dataset(const ServeBenchmarkOptions& o, const TokenCodec* codec) {
  if (o.dataset == "jsonl") {
    auto loaded = load_jsonl_dataset(o.jsonl, codec, o.num_prompts);
    if (!loaded.ok()) return Status::InvalidArgument("--dataset-path: " + loaded.status().message());
    return loaded;
  }
  if (codec == nullptr) return Status::InvalidArgument("--tokenizer: the " + o.dataset + " dataset needs a tokenizer");
  if (o.dataset == "random") return make_random_dataset(*codec, o.random, o.num_prompts, o.seed);
  return make_prefix_dataset(*codec, o.prefix, o.num_prompts, o.seed);
}

nlohmann::json config_to_json(const ServeBenchmarkOptions& o, const TokenCodec* codec) {
  nlohmann::json c;
  c["base_url"] = o.client.base_url;
  c["endpoint"] = o.client.endpoint;
  c["model"] = o.client.model;
  c["tokenizer"] = codec != nullptr ? codec->name() : "";
  c["dataset_name"] = o.dataset;
  if (o.dataset == "random") {
    c["random_input_len"] = o.random.input_len;
    c["random_output_len"] = o.random.output_len;
    c["random_range_ratio"] = o.random.range_ratio;
  } else if (o.dataset == "prefix") {
    c["prefix_len"] = o.prefix.prefix_len;
    c["prefix_suffix_len"] = o.prefix.suffix_len;
    c["prefix_num_prefixes"] = o.prefix.num_prefixes;
    c["prefix_output_len"] = o.prefix.output_len;
  } else {
    c["dataset_path"] = o.jsonl.path;
    c["jsonl_output_len"] = o.jsonl.default_output_len;
  }
  c["num_prompts"] = o.num_prompts;
  nlohmann::json rates = nlohmann::json::array();
  for (double r : o.request_rates) rates.push_back(rate_json(r));
  c["request_rates"] = rates;
  c["burstiness"] = o.burstiness;
  c["max_concurrency"] = o.max_concurrency > 0 ? nlohmann::json(o.max_concurrency) : nlohmann::json(nullptr);
  c["seed"] = o.seed;
  c["num_warmups"] = o.num_warmups;
  c["ignore_eos"] = o.client.ignore_eos;
  c["temperature"] = o.client.temperature;
  c["extra_body"] = o.client.extra_body_json.empty() ? nlohmann::json(nullptr)
                                                     : nlohmann::json::parse(o.client.extra_body_json, nullptr, false);
  c["percentiles"] = o.percentiles;
  auto slo = parse_slo(o.goodput);
  nlohmann::json goodput = nullptr;
  if (slo.ok() && slo->any()) {
    goodput = nlohmann::json::object();
    if (slo->ttft_ms) goodput["ttft_ms"] = *slo->ttft_ms;
    if (slo->tpot_ms) goodput["tpot_ms"] = *slo->tpot_ms;
    if (slo->e2el_ms) goodput["e2el_ms"] = *slo->e2el_ms;
  }
  c["goodput"] = goodput;
  c["request_timeout_s"] = o.client.request_timeout_s;
  return c;
}

nlohmann::json run_to_json(const RunRecord& run, const ServeBenchmarkOptions& o, const TokenCodec* codec) {
  const RunMetrics& m = run.metrics;
  nlohmann::json j;
  j["request_rate"] = rate_json(run.request_rate);
  j["burstiness"] = o.burstiness;
  j["max_concurrency"] = o.max_concurrency > 0 ? nlohmann::json(o.max_concurrency) : nlohmann::json(nullptr);
  j["started_at"] = run.started_at;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["failures"] = m.failure_reasons;
  j["total_input_tokens"] = m.total_input_tokens;
  j["total_output_tokens"] = m.total_output_tokens;
  j["request_throughput"] = m.request_throughput;
  j["request_goodput"] = m.request_goodput ? nlohmann::json(*m.request_goodput) : nlohmann::json(nullptr);
  j["good_requests"] = m.request_goodput ? nlohmann::json(m.good_requests) : nlohmann::json(nullptr);
  j["input_throughput"] = m.input_throughput;
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["peak_output_throughput"] = m.peak_output_throughput;
  j["peak_concurrent_requests"] = m.peak_concurrent_requests;
  j["prompt_len_mismatches"] = m.prompt_len_mismatches;
  add_latency(j, "ttft", m.ttft);
  add_latency(j, "tpot", m.tpot);
  add_latency(j, "itl", m.itl);
  add_latency(j, "e2el", m.e2el);
  j["timeline"] = {{"bucket_s", m.timeline_bucket_s}, {"output_throughput", m.output_throughput_timeline}};
  j["server_metrics_delta"] = run.have_server_metrics ? nlohmann::json(run.server_metrics_delta) : nlohmann::json(nullptr);
  nlohmann::json requests = nlohmann::json::array();
  for (const RequestResult& r : run.results) {
    nlohmann::json q;
    q["success"] = r.success;
    if (!r.success) q["error"] = r.error;
    q["http_status"] = r.http_status;
    q["prompt_len"] = r.prompt_len >= 0 ? nlohmann::json(r.prompt_len) : nlohmann::json(nullptr);
    q["output_len"] = r.output_len;
    q["usage_prompt_tokens"] = r.usage_prompt_tokens >= 0 ? nlohmann::json(r.usage_prompt_tokens) : nlohmann::json(nullptr);
    q["usage_completion_tokens"] =
        r.usage_completion_tokens >= 0 ? nlohmann::json(r.usage_completion_tokens) : nlohmann::json(nullptr);
    q["scheduled_s"] = offset_s(r.scheduled_ns, run.run_start_ns);
    q["start_s"] = offset_s(r.start_ns, run.run_start_ns);
    q["end_s"] = offset_s(r.done_ns, run.run_start_ns);
    q["num_chunks"] = r.chunk_ns.size();
    if (r.success) {
      const int32_t output_tokens = output_tokens_of(r, codec);
      q["output_tokens"] = output_tokens;
      q["ttft_ms"] = r.ttft_s() * 1e3;
      q["tpot_ms"] = tpot_s_of(r, output_tokens) * 1e3;
      q["e2el_ms"] = r.latency_s() * 1e3;
      std::vector<double> itl;
      itl.reserve(r.chunk_ns.size());
      for (size_t k = 1; k < r.chunk_ns.size(); ++k) itl.push_back(static_cast<double>(r.chunk_ns[k] - r.chunk_ns[k - 1]) * 1e-6);
      q["itl_ms"] = itl;
    } else {
      q["output_tokens"] = 0;
      q["ttft_ms"] = r.chunk_ns.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.ttft_s() * 1e3);
    }
    requests.push_back(std::move(q));
  }
  j["requests"] = std::move(requests);
  return j;
}

Status write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::Unavailable("cannot write '" + tmp + "'");
    out << text;
    if (!out.flush()) return Status::Unavailable("cannot write '" + tmp + "'");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::Unavailable("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  return Status::Ok();
}

StatusOr<nlohmann::json> run_serve_benchmark(const ServeBenchmarkOptions& o, OpenAIClient& client,
                                             const std::vector<BenchRequest>& requests, const TokenCodec* codec,
                                             std::FILE* out) {
  auto slo = parse_slo(o.goodput);
  if (!slo.ok()) return Status::InvalidArgument("--goodput: " + slo.status().message());
  nlohmann::json doc;
  doc["format"] = "tandem-bench-serve/1";
  doc["label"] = o.label;
  doc["date"] = utc_now_iso();
  doc["config"] = config_to_json(o, codec);
  doc["runs"] = nlohmann::json::array();

  if (o.num_warmups > 0 && !requests.empty()) {
    // As vLLM's initial test run: one prompt, sequentially, so a wrong --model or --endpoint fails fast.
    std::vector<BenchRequest> warmup(static_cast<size_t>(o.num_warmups), requests.front());
    int64_t start_ns = 0;
    auto results = client.run(warmup, std::vector<double>(warmup.size(), 0.0), 1, {}, start_ns);
    for (const RequestResult& r : results) {
      if (!r.success) {
        return Status::Unavailable("warm-up request to " + o.client.base_url + o.client.endpoint + " failed: " + r.error +
                                   " (check --base-url, --endpoint and --model)");
      }
    }
    spdlog::info("bench serve: warm-up done requests={}", results.size());
  }

  for (double rate : o.request_rates) {
    RunRecord run;
    run.request_rate = rate;
    run.started_at = utc_now_iso();
    MetricSamples before;
    if (o.scrape_metrics) {
      auto text = client.get("/metrics", 5.0);
      if (text.ok()) {
        before = parse_prometheus_counters(*text);
        run.have_server_metrics = true;
      } else {
        spdlog::info("bench serve: no server metrics ({})", text.status().message());
      }
    }
    std::vector<double> offsets = make_arrival_offsets(static_cast<int32_t>(requests.size()), rate, o.burstiness, o.seed);
    const std::string title = std::isinf(rate) ? "rate inf" : fmt::format("rate {:g}", rate);
    ProgressPrinter progress(stderr, o.progress, "bench serve " + title, o.progress_interval_s);
    if (o.progress != ProgressMode::kNone) {
      const std::string arrivals = std::isinf(rate) ? "all at once"
                                   : o.burstiness == 1.0 ? fmt::format("Poisson at {:g} req/s", rate)
                                                         : fmt::format("gamma at {:g} req/s, burstiness {:g}", rate, o.burstiness);
      const std::string cap = o.max_concurrency > 0 ? fmt::format("at most {} in flight", o.max_concurrency) : "no concurrency cap";
      std::fprintf(stderr, "bench serve: %zu requests to %s%s, %s, %s\n", requests.size(), o.client.base_url.c_str(),
                   o.client.endpoint.c_str(), arrivals.c_str(), cap.c_str());
    }
    run.results = client.run(requests, offsets, o.max_concurrency,
                             [&](const RunProgress& p) { progress.update(p); }, run.run_start_ns);
    int64_t end_ns = run.run_start_ns;
    for (const RequestResult& r : run.results) end_ns = std::max(end_ns, r.done_ns);
    run.duration_s = static_cast<double>(end_ns - run.run_start_ns) * 1e-9;
    if (run.have_server_metrics) {
      auto text = client.get("/metrics", 5.0);
      if (text.ok()) {
        run.server_metrics_delta = metric_deltas(before, parse_prometheus_counters(*text));
      } else {
        run.have_server_metrics = false;
      }
    }
    run.metrics = compute_metrics(run.results, run.run_start_ns, run.duration_s, o.percentiles, *slo, codec);
    if (run.metrics.prompt_len_mismatches > 0 && o.client.endpoint.find("chat") == std::string::npos) {
      spdlog::warn("bench serve: the server counted other prompt lengths than the client for {} requests; "
                   "check that --tokenizer matches the served model", run.metrics.prompt_len_mismatches);
    }
    std::string table = format_metrics_table(run.metrics, "Serving Benchmark Result", o.max_concurrency, rate);
    std::fputs(table.c_str(), out);
    if (!run.have_server_metrics) {
      // nothing to print
    } else if (!run.server_metrics_delta.empty()) {
      std::fputs(fmt::format("{:-^50}\n", "Server metrics (delta over the run)").c_str(), out);
      for (const auto& [series, delta] : run.server_metrics_delta) {
        std::fputs(fmt::format("{:<60} {:g}\n", series, delta).c_str(), out);
      }
    }
    std::fflush(out);
    doc["runs"].push_back(run_to_json(run, o, codec));
    if (!o.save_result.empty()) {
      Status written = write_file_atomically(o.save_result, doc.dump(1));
      if (!written.ok()) return Status::Unavailable("--save-result: " + written.message());
    }
  }
  return doc;
}

}  // namespace tandem::loadgen
