// The server's Prometheus /metrics, scraped before and after a run so the result file can say what the
// server did meanwhile (remote and local prefills, routing decisions by reason, KV bytes moved).
// Only tandem_* and vllm:* series are kept; only counters (and histogram/summary _sum and _count, which
// are counters too) give meaningful deltas, so gauges are skipped.
// Thread-safety: plain functions and values.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace tandem::loadgen {

// Series (name with its labels, as written, e.g. `tandem_prefill_total{where="remote"}`) -> value.
using MetricSamples = std::map<std::string, double>;

// Parses the Prometheus text exposition format, keeping tandem_* and vllm:* counter-like series.
// Lines it does not understand are skipped: a scrape never fails a benchmark.
MetricSamples parse_prometheus_counters(std::string_view text);

// after - before for every series in after (a series new in after counts from 0); zero deltas dropped.
MetricSamples metric_deltas(const MetricSamples& before, const MetricSamples& after);

}  // namespace tandem::loadgen
