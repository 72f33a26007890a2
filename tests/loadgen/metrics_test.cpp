// Metric definitions against hand-computed values (vLLM's definitions, numpy's percentiles).
#include <gtest/gtest.h>

#include "loadgen/metrics.h"
#include "loadgen/progress.h"

#include <algorithm>
#include <cstdio>

namespace tandem::loadgen {
namespace {

constexpr int64_t kMs = 1'000'000;

// A successful request starting at start_ms with chunks at the given ms offsets from the start.
RequestResult request(int64_t start_ms, std::vector<int64_t> chunk_offsets_ms, int32_t usage_tokens = -1) {
  RequestResult r;
  r.success = true;
  r.prompt_len = 10;
  r.start_ns = 1000 * kMs + start_ms * kMs;
  for (int64_t t : chunk_offsets_ms) r.chunk_ns.push_back(r.start_ns + t * kMs);
  r.done_ns = r.chunk_ns.back();
  r.usage_completion_tokens = usage_tokens;
  return r;
}

TEST(Percentile, MatchesNumpyLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], [50, 90, 99]) = [2.5, 3.7, 3.97]
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 90), 3.7, 1e-12);
  EXPECT_NEAR(percentile({4, 1, 3, 2}, 99), 3.97, 1e-12);
  EXPECT_EQ(percentile({}, 99), 0.0);
  EXPECT_EQ(percentile({7}, 10), 7.0);
}

TEST(Metrics, TtftTpotItlE2eFollowVllmDefinitions) {
  // Chunks at 100, 110, 130, 160 ms: TTFT 100, E2E 160, ITLs 10/20/30, TPOT (160-100)/3 = 20.
  std::vector<RequestResult> results = {request(0, {100, 110, 130, 160})};
  RunMetrics m = compute_metrics(results, 1000 * kMs, 1.0, {50, 99}, SloConfig{}, nullptr);
  EXPECT_EQ(m.completed, 1);
  EXPECT_EQ(m.total_output_tokens, 4);  // no usage, no codec: one token per chunk
  EXPECT_EQ(m.total_input_tokens, 10);
  EXPECT_NEAR(m.ttft.mean_ms, 100, 1e-6);
  EXPECT_NEAR(m.e2el.mean_ms, 160, 1e-6);
  EXPECT_NEAR(m.tpot.mean_ms, 20, 1e-6);
  EXPECT_NEAR(m.itl.mean_ms, 20, 1e-6);
  EXPECT_NEAR(m.itl.median_ms, 20, 1e-6);
  EXPECT_NEAR(m.itl.percentiles_ms[1].second, 29.8, 1e-6);
  EXPECT_FALSE(m.request_goodput.has_value());
}

TEST(Metrics, UsageTokensDriveTpotAndThroughput) {
  // One chunk carrying 5 tokens per the usage: TPOT = (E2E - TTFT) / 4 = 0 here; 2 chunks, 9 tokens:
  // TPOT = (300 - 100) / 8 = 25 ms.
  std::vector<RequestResult> results = {request(0, {100, 300}, 9)};
  RunMetrics m = compute_metrics(results, 1000 * kMs, 2.0, {}, SloConfig{}, nullptr);
  EXPECT_EQ(m.total_output_tokens, 9);
  EXPECT_NEAR(m.tpot.mean_ms, 25, 1e-6);
  EXPECT_NEAR(m.output_throughput, 4.5, 1e-9);
  EXPECT_NEAR(m.total_token_throughput, 9.5, 1e-9);
  EXPECT_NEAR(m.request_throughput, 0.5, 1e-9);
}

TEST(Metrics, GoodputCountsRequestsMeetingEverySlo) {
  std::vector<RequestResult> results = {
      request(0, {100, 110, 120, 130, 140}),    // TTFT 100, TPOT 10, E2E 140: good
      request(0, {300, 310, 320}),              // TTFT 300: misses ttft:200
      request(0, {100, 150, 200}),              // TPOT 50: misses tpot:20
      request(0, {150}),                        // one token: TPOT 0, TTFT 150, E2E 150: good
      request(0, {199, 219}),                   // TTFT 199, TPOT 20: good (limits are inclusive)
  };
  RequestResult failed;
  failed.error = "HTTP 500: boom";
  failed.start_ns = 1000 * kMs;
  failed.done_ns = 1001 * kMs;
  results.push_back(failed);
  SloConfig slo = *parse_slo({"ttft:200", "tpot:20"});
  RunMetrics m = compute_metrics(results, 1000 * kMs, 2.0, {}, slo, nullptr);
  EXPECT_EQ(m.completed, 5);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.failure_reasons.at("HTTP 500: boom"), 1);
  EXPECT_EQ(m.good_requests, 3);
  ASSERT_TRUE(m.request_goodput.has_value());
  EXPECT_NEAR(*m.request_goodput, 1.5, 1e-9);

  SloConfig e2e = *parse_slo({"e2el:145"});
  EXPECT_EQ(compute_metrics(results, 1000 * kMs, 2.0, {}, e2e, nullptr).good_requests, 1);
}

TEST(Metrics, PeakConcurrencyAndFailuresExcludedFromLatency) {
  std::vector<RequestResult> results = {request(0, {100}), request(50, {100}), request(500, {10})};
  RunMetrics m = compute_metrics(results, 1000 * kMs, 1.0, {}, SloConfig{}, nullptr);
  EXPECT_EQ(m.peak_concurrent_requests, 2);
  EXPECT_NEAR(m.ttft.mean_ms, 70, 1e-6);
}

TEST(MetricsTable, ListsTheMostFrequentFailureReasonsFirstAndCapsThem) {
  std::vector<RequestResult> results;
  for (int i = 0; i < 12; ++i) {
    RequestResult r;
    r.error = "HTTP 500: request id " + std::to_string(i);
    results.push_back(r);
  }
  for (int i = 0; i < 3; ++i) {
    RequestResult r;
    r.error = "connection closed";
    results.push_back(r);
  }
  RunMetrics m = compute_metrics(results, 0, 1.0, {}, SloConfig{}, nullptr);
  EXPECT_EQ(m.failed, 15);
  EXPECT_EQ(m.failure_reasons.size(), 13u);
  std::string table = format_metrics_table(m, "t", 0, 1.0);
  EXPECT_LT(table.find("3 x connection closed"), table.find("1 x HTTP 500"));
  EXPECT_NE(table.find("... and 3 more reasons"), std::string::npos) << table;
}

TEST(ParseSlo, RejectsUnknownMetricsAndBadNumbers) {
  EXPECT_FALSE(parse_slo({"ttfb:100"}).ok());
  EXPECT_FALSE(parse_slo({"ttft:"}).ok());
  EXPECT_FALSE(parse_slo({"ttft:-3"}).ok());
  EXPECT_FALSE(parse_slo({"ttft:1", "ttft:2"}).ok());
  auto slo = parse_slo({"ttft:1.5", "e2el:30"});
  ASSERT_TRUE(slo.ok());
  EXPECT_EQ(*slo->ttft_ms, 1.5);
  EXPECT_FALSE(slo->tpot_ms.has_value());
}

TEST(MetricsTable, PrintsVllmStyleSections) {
  std::vector<RequestResult> results = {request(0, {100, 110})};
  RunMetrics m = compute_metrics(results, 1000 * kMs, 1.0, {99}, *parse_slo({"ttft:500"}), nullptr);
  std::string table = format_metrics_table(m, "Serving Benchmark Result", 4, 2.0);
  EXPECT_NE(table.find("Successful requests:"), std::string::npos);
  EXPECT_NE(table.find("Request goodput (req/s):"), std::string::npos);
  EXPECT_NE(table.find("Maximum request concurrency:"), std::string::npos);
  EXPECT_NE(table.find("P99 TTFT (ms):"), std::string::npos);
  EXPECT_NE(table.find("Median ITL (ms):"), std::string::npos);
}

std::string progress_output(ProgressMode mode) {
  std::FILE* out = std::tmpfile();
  ProgressPrinter printer(out, mode, "run", /*line_interval_s=*/1.0);
  printer.update({10, 0, 0, 1, 0.0});
  printer.update({10, 4, 1, 3, 0.5});   // within the line interval: no line
  printer.update({10, 10, 1, 0, 2.0});  // done
  printer.update({10, 10, 1, 0, 2.1});  // after done: nothing
  std::rewind(out);
  std::string text;
  char buffer[1024];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), out)) text.append(buffer, n);
  std::fclose(out);
  return text;
}

TEST(ProgressPrinter, BarRedrawsInPlaceAndLinesArePeriodic) {
  std::string bar = progress_output(ProgressMode::kBar);
  EXPECT_EQ(std::count(bar.begin(), bar.end(), '\r'), 3);
  EXPECT_EQ(std::count(bar.begin(), bar.end(), '\n'), 1);
  EXPECT_NE(bar.find("10/10 req  5.0 req/s"), std::string::npos) << bar;
  std::string lines = progress_output(ProgressMode::kLines);
  EXPECT_EQ(lines.find('\r'), std::string::npos);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 2) << lines;
  EXPECT_NE(lines.find("run: 10/10 requests done (1 failed), 5.0 req/s, 0 in flight, elapsed 0:02"), std::string::npos) << lines;
}

}  // namespace
}  // namespace tandem::loadgen
