// Prometheus scraping: which series are kept and how deltas are taken.
#include <gtest/gtest.h>

#include "loadgen/server_metrics.h"

namespace tandem::loadgen {
namespace {

TEST(ServerMetrics, KeepsTandemAndVllmCountersOnly) {
  const char* text =
      "# HELP tandem_prefill_total Prefills by where they ran.\n"
      "# TYPE tandem_prefill_total counter\n"
      "tandem_prefill_total{where=\"remote\"} 3\n"
      "tandem_prefill_total{where=\"local\",reason=\"uncached tokens} < 1000\"} 5 1700000000\n"
      "# TYPE tandem_kv_blocks_free gauge\n"
      "tandem_kv_blocks_free 120\n"
      "# TYPE vllm:e2e_request_latency_seconds histogram\n"
      "vllm:e2e_request_latency_seconds_bucket{le=\"1\"} 4\n"
      "vllm:e2e_request_latency_seconds_sum 2.5\n"
      "vllm:e2e_request_latency_seconds_count 4\n"
      "process_cpu_seconds_total 99\n"
      "tandem_kv_transfer_bytes_total 1.5e6\n"
      "garbage line without value\n";
  MetricSamples samples = parse_prometheus_counters(text);
  EXPECT_EQ(samples.at("tandem_prefill_total{where=\"remote\"}"), 3);
  EXPECT_EQ(samples.at("tandem_prefill_total{where=\"local\",reason=\"uncached tokens} < 1000\"}"), 5);
  EXPECT_EQ(samples.at("vllm:e2e_request_latency_seconds_sum"), 2.5);
  EXPECT_EQ(samples.at("vllm:e2e_request_latency_seconds_count"), 4);
  EXPECT_EQ(samples.at("tandem_kv_transfer_bytes_total"), 1.5e6);
  EXPECT_EQ(samples.count("tandem_kv_blocks_free"), 0u);
  EXPECT_EQ(samples.count("vllm:e2e_request_latency_seconds_bucket{le=\"1\"}"), 0u);
  EXPECT_EQ(samples.count("process_cpu_seconds_total"), 0u);
  EXPECT_EQ(samples.size(), 5u);
}

TEST(ServerMetrics, DeltasCountNewSeriesFromZeroAndDropUnchanged) {
  MetricSamples before = {{"a_total", 2}, {"b_total", 5}};
  MetricSamples after = {{"a_total", 7}, {"b_total", 5}, {"c_total", 1}};
  MetricSamples d = metric_deltas(before, after);
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.at("a_total"), 5);
  EXPECT_EQ(d.at("c_total"), 1);
}

}  // namespace
}  // namespace tandem::loadgen
