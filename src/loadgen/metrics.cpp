// Metric computation and the printed summary for `tandem bench serve`.
#include "loadgen/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tandem::loadgen {
namespace {

LatencySummary summarize(std::vector<double> values_s, const std::vector<double>& percentiles) {
  LatencySummary s;
  if (!values_s.empty()) {
    const double n = static_cast<double>(values_s.size());
    const double mean = std::accumulate(values_s.begin(), values_s.end(), 0.0) / n;
    double sq = 0;
    for (double v : values_s) sq += (v - mean) * (v - mean);
    s.mean_ms = mean * 1e3;
    s.std_ms = std::sqrt(sq / n) * 1e3;  // population std, numpy's default
  }
  std::sort(values_s.begin(), values_s.end());
  auto sorted_percentile = [&](double p) {
    if (values_s.empty()) return 0.0;
    const double pos = p / 100.0 * static_cast<double>(values_s.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, values_s.size() - 1);
    return values_s[lo] + (pos - static_cast<double>(lo)) * (values_s[hi] - values_s[lo]);
  };
  s.median_ms = sorted_percentile(50) * 1e3;
  for (double p : percentiles) s.percentiles_ms.emplace_back(p, sorted_percentile(p) * 1e3);
  return s;
}

}  // namespace

StatusOr<SloConfig> parse_slo(const std::vector<std::string>& items) {
  SloConfig slo;
  for (const std::string& item : items) {
    size_t colon = item.find(':');
    std::string name = item.substr(0, colon);
    std::optional<double>* target = nullptr;
    if (name == "ttft") target = &slo.ttft_ms;
    else if (name == "tpot") target = &slo.tpot_ms;
    else if (name == "e2el") target = &slo.e2el_ms;
    if (colon == std::string::npos || target == nullptr) {
      return Status::InvalidArgument("'" + item + "': expected ttft:MS, tpot:MS or e2el:MS");
    }
    if (target->has_value()) return Status::InvalidArgument("'" + item + "': " + name + " given twice");
    std::string value = item.substr(colon + 1);
    char* end = nullptr;
    double ms = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != '\0' || !(ms >= 0) || std::isinf(ms)) {
      return Status::InvalidArgument("'" + item + "': '" + value + "' is not a non-negative number of milliseconds");
    }
    *target = ms;
  }
  return slo;
}

double percentile(std::vector<double> values, double p) {
  LatencySummary s = summarize(std::move(values), {p});
  return s.percentiles_ms[0].second * 1e-3;
}

int32_t output_tokens_of(const RequestResult& r, const TokenCodec* codec) {
  if (r.usage_completion_tokens > 0) return r.usage_completion_tokens;
  if (codec != nullptr && !r.generated_text.empty()) {
    return static_cast<int32_t>(codec->encode(r.generated_text).size());
  }
  return static_cast<int32_t>(r.chunk_ns.size());
}

double tpot_s_of(const RequestResult& r, int32_t output_tokens) {
  if (output_tokens <= 1) return 0.0;
  return (r.latency_s() - r.ttft_s()) / static_cast<double>(output_tokens - 1);
}

RunMetrics compute_metrics(const std::vector<RequestResult>& results, int64_t run_start_ns, double duration_s,
                           const std::vector<double>& percentiles, const SloConfig& slo, const TokenCodec* codec) {
  RunMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  m.timeline_bucket_s = duration_s > 60 ? 1.0 : std::max(0.05, duration_s / 60.0);
  const size_t num_buckets = static_cast<size_t>(std::ceil(std::max(duration_s, 1e-9) / m.timeline_bucket_s)) + 1;
  std::vector<double> tokens_per_bucket(num_buckets, 0.0);
  // vLLM counts tokens per one-second window; a run shorter than a second uses one window of its length.
  const double peak_window_s = std::clamp(duration_s, 1e-3, 1.0);
  std::vector<double> tokens_per_second(static_cast<size_t>(std::ceil(std::max(duration_s, 0.0) / peak_window_s)) + 2, 0.0);
  std::vector<std::pair<int64_t, int>> edges;  // (+1 at start, -1 at end) for peak concurrency
  const int32_t added_tokens = codec != nullptr ? codec->num_added_special_tokens() : 0;
  for (const RequestResult& r : results) {
    if (r.start_ns > 0) {
      edges.emplace_back(r.start_ns, 1);
      edges.emplace_back(std::max(r.done_ns, r.chunk_ns.empty() ? r.start_ns : r.chunk_ns.back()), -1);
    }
    if (!r.success) {
      ++m.failed;
      ++m.failure_reasons[r.error];
      continue;
    }
    ++m.completed;
    const int32_t output_tokens = output_tokens_of(r, codec);
    const int32_t input_tokens = r.prompt_len >= 0 ? r.prompt_len : std::max(r.usage_prompt_tokens, 0);
    if (r.prompt_len >= 0 && r.usage_prompt_tokens >= 0 && r.usage_prompt_tokens != r.prompt_len + added_tokens) {
      ++m.prompt_len_mismatches;
    }
    m.total_input_tokens += input_tokens;
    m.total_output_tokens += output_tokens;
    const double ttft = r.ttft_s();
    const double e2el = r.latency_s();
    const double tpot = tpot_s_of(r, output_tokens);
    ttfts.push_back(ttft);
    e2els.push_back(e2el);
    if (output_tokens > 1) tpots.push_back(tpot);
    for (size_t k = 1; k < r.chunk_ns.size(); ++k) {
      itls.push_back(static_cast<double>(r.chunk_ns[k] - r.chunk_ns[k - 1]) * 1e-9);
    }
    // A chunk may carry several tokens; spread the request's tokens evenly over its chunks.
    const double tokens_per_chunk = static_cast<double>(output_tokens) / static_cast<double>(r.chunk_ns.size());
    for (int64_t t : r.chunk_ns) {
      const double offset_s = std::max(0.0, static_cast<double>(t - run_start_ns) * 1e-9);
      tokens_per_bucket[std::min(num_buckets - 1, static_cast<size_t>(offset_s / m.timeline_bucket_s))] +=
          tokens_per_chunk;
      tokens_per_second[std::min(tokens_per_second.size() - 1, static_cast<size_t>(offset_s / peak_window_s))] +=
          tokens_per_chunk;
    }
    if (slo.any()) {
      // As vLLM: every given SLO must hold; TPOT is 0 for one-token outputs, so it always holds then.
      bool good = true;
      if (slo.ttft_ms && ttft * 1e3 > *slo.ttft_ms) good = false;
      if (slo.tpot_ms && tpot * 1e3 > *slo.tpot_ms) good = false;
      if (slo.e2el_ms && e2el * 1e3 > *slo.e2el_ms) good = false;
      if (good) ++m.good_requests;
    }
  }
  std::sort(edges.begin(), edges.end());
  int32_t concurrent = 0;
  for (const auto& [t, delta] : edges) {
    concurrent += delta;
    m.peak_concurrent_requests = std::max(m.peak_concurrent_requests, concurrent);
  }
  const double d = duration_s > 0 ? duration_s : 1e-9;
  m.request_throughput = m.completed / d;
  if (slo.any()) m.request_goodput = m.good_requests / d;
  m.input_throughput = static_cast<double>(m.total_input_tokens) / d;
  m.output_throughput = static_cast<double>(m.total_output_tokens) / d;
  m.total_token_throughput = static_cast<double>(m.total_input_tokens + m.total_output_tokens) / d;
  m.peak_output_throughput = *std::max_element(tokens_per_second.begin(), tokens_per_second.end()) / peak_window_s;
  // The last, partial bucket would read low; drop it when the run covers more than one bucket.
  const size_t full_buckets = std::max<size_t>(1, static_cast<size_t>(std::ceil(d / m.timeline_bucket_s)));
  tokens_per_bucket.resize(std::min(tokens_per_bucket.size(), full_buckets));
  for (double& v : tokens_per_bucket) v /= m.timeline_bucket_s;
  m.output_throughput_timeline = std::move(tokens_per_bucket);
  m.ttft = summarize(std::move(ttfts), percentiles);
  m.tpot = summarize(std::move(tpots), percentiles);
  m.itl = summarize(std::move(itls), percentiles);
  m.e2el = summarize(std::move(e2els), percentiles);
  return m;
}

std::string percentile_name(double p) {
  if (std::floor(p) == p) return fmt::format("p{}", static_cast<int64_t>(p));
  return fmt::format("p{}", p);
}

std::string format_metrics_table(const RunMetrics& m, const std::string& title, int32_t max_concurrency,
                                 double request_rate) {
  std::string out;
  auto line = [&](std::string_view name, const std::string& value) { out += fmt::format("{:<40} {:<10}\n", name, value); };
  auto header = [&](std::string_view name, char fill) {
    // Centred in 50 columns, as vLLM's table; extra fill goes to the right.
    const size_t pad = name.size() < 50 ? 50 - name.size() : 0;
    out += std::string(pad / 2, fill) + std::string(name) + std::string(pad - pad / 2, fill) + "\n";
  };
  header(" " + title + " ", '=');
  line("Successful requests:", std::to_string(m.completed));
  line("Failed requests:", std::to_string(m.failed));
  // The most frequent reasons first; bodies with request ids can make every reason distinct, so cap it.
  std::vector<std::pair<int32_t, std::string>> reasons;
  for (const auto& [reason, count] : m.failure_reasons) reasons.emplace_back(count, reason);
  std::stable_sort(reasons.begin(), reasons.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  constexpr size_t kMaxReasons = 10;
  for (size_t i = 0; i < std::min(reasons.size(), kMaxReasons); ++i) {
    out += fmt::format("  {:>6} x {}\n", reasons[i].first, reasons[i].second);
  }
  if (reasons.size() > kMaxReasons) {
    out += fmt::format("  ... and {} more reasons (all in the result file)\n", reasons.size() - kMaxReasons);
  }
  line("Request rate configured (RPS):", std::isinf(request_rate) ? "inf" : fmt::format("{:.2f}", request_rate));
  if (max_concurrency > 0) line("Maximum request concurrency:", std::to_string(max_concurrency));
  line("Benchmark duration (s):", fmt::format("{:.2f}", m.duration_s));
  line("Total input tokens:", std::to_string(m.total_input_tokens));
  line("Total generated tokens:", std::to_string(m.total_output_tokens));
  line("Request throughput (req/s):", fmt::format("{:.2f}", m.request_throughput));
  if (m.request_goodput) line("Request goodput (req/s):", fmt::format("{:.2f}", *m.request_goodput));
  line("Input token throughput (tok/s):", fmt::format("{:.2f}", m.input_throughput));
  line("Output token throughput (tok/s):", fmt::format("{:.2f}", m.output_throughput));
  line("Peak output token throughput (tok/s):", fmt::format("{:.2f}", m.peak_output_throughput));
  line("Peak concurrent requests:", std::to_string(m.peak_concurrent_requests));
  line("Total Token throughput (tok/s):", fmt::format("{:.2f}", m.total_token_throughput));
  if (m.prompt_len_mismatches > 0) {
    line("Prompt length != server usage:", fmt::format("{} requests", m.prompt_len_mismatches));
  }
  auto section = [&](std::string_view heading, std::string_view short_name, const LatencySummary& s) {
    header(heading, '-');
    line(fmt::format("Mean {} (ms):", short_name), fmt::format("{:.2f}", s.mean_ms));
    line(fmt::format("Median {} (ms):", short_name), fmt::format("{:.2f}", s.median_ms));
    for (const auto& [p, v] : s.percentiles_ms) {
      line(fmt::format("P{} {} (ms):", percentile_name(p).substr(1), short_name), fmt::format("{:.2f}", v));
    }
  };
  section("Time to First Token", "TTFT", m.ttft);
  section("Time per Output Token (excl. 1st token)", "TPOT", m.tpot);
  section("Inter-token Latency", "ITL", m.itl);
  section("End-to-end Latency", "E2EL", m.e2el);
  out += std::string(50, '=') + "\n";
  return out;
}

}  // namespace tandem::loadgen
