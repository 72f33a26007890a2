// The frontend's metric families (names follow vLLM's where one exists, tandem_* otherwise): their
// declarations, and the gauges refreshed from the worker directory at each scrape of /metrics. The
// counters and histograms of requests are updated where they happen (request_lifecycle.cpp).
// Thread-safety: none; the frontend's I/O thread only.
#pragma once

#include <cstddef>
#include <string>

#include "frontend/metrics.h"
#include "frontend/router.h"
#include "frontend/worker_directory.h"

namespace tandem::frontend {

// TYPE and HELP of every family, and the counters that show 0 before their first event.
void describe_serving_metrics(Metrics& metrics);

// The Prometheus text for /metrics: per-worker gauges from their last heartbeats, workers and listed
// members by role, the prefill queue, requests in flight and the router thresholds.
std::string render_serving_metrics(Metrics& metrics, const WorkerDirectory& directory, size_t num_active_requests,
                                   const RouterOptions& router);

}  // namespace tandem::frontend
