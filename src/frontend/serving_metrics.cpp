// The frontend's metric families and scrape-time gauges (see serving_metrics.h).
#include "frontend/serving_metrics.h"

#include <map>

namespace tandem::frontend {

std::string render_serving_metrics(Metrics& metrics, const WorkerDirectory& directory, size_t num_active_requests,
                                   const RouterOptions& router) {
  // Gauges of workers that left must not linger: every per-worker series is rebuilt.
  for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                           "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:num_preemptions_total",
                           "tandem_worker_kv_blocks_used", "tandem_worker_kv_blocks_total", "tandem_worker_kv_blocks_cached",
                           "tandem_worker_kv_reservations", "tandem_worker_prefills_in_flight", "tandem_workers",
                           "tandem_worker_kv_transfer_bytes_total", "tandem_worker_remote_prefill_fallbacks_total",
                           "tandem_worker_outstanding_requests", "tandem_worker_info", "tandem_cluster_members",
                           "vllm:cache_config_info"}) {
    metrics.clear(name);
  }
  std::map<std::string, int> by_role;
  directory.for_each_worker([&](const WorkerView& w) {
    if (!w.registered) return;
    const char* role = role_label(w.info->role());
    if (w.routable) by_role[role]++;
    const auto& h = *w.heartbeat;
    const std::string l = labels({{"worker", w.info->worker_id()}, {"role", role}});
    metrics.set("vllm:num_requests_running", l, h.num_running());
    metrics.set("vllm:num_requests_waiting", l, h.num_waiting());
    metrics.set("vllm:kv_cache_usage_perc", l,
                h.num_kv_blocks_total() > 0 ? static_cast<double>(h.num_kv_blocks_used()) / h.num_kv_blocks_total() : 0);
    metrics.set("vllm:prefix_cache_queries_total", l, static_cast<double>(h.prefix_cache_queries()));
    metrics.set("vllm:prefix_cache_hits_total", l, static_cast<double>(h.prefix_cache_hits()));
    metrics.set("vllm:num_preemptions_total", l, static_cast<double>(h.num_preemptions()));
    metrics.set("tandem_worker_kv_blocks_used", l, h.num_kv_blocks_used());
    metrics.set("tandem_worker_kv_blocks_total", l, h.num_kv_blocks_total());
    metrics.set("tandem_worker_kv_blocks_cached", l, h.num_kv_blocks_cached());
    metrics.set("tandem_worker_kv_reservations", l, h.num_reservations());
    metrics.set("tandem_worker_prefills_in_flight", l, h.num_prefills_in_flight());
    metrics.set("tandem_worker_kv_transfer_bytes_total", l, static_cast<double>(h.kv_transfer_bytes_total()));
    metrics.set("tandem_worker_remote_prefill_fallbacks_total", l, static_cast<double>(h.remote_prefill_fallbacks_total()));
    metrics.set("tandem_worker_outstanding_requests", l, w.outstanding);
    metrics.set("tandem_worker_info",
                labels({{"worker", w.info->worker_id()}, {"role", role}, {"pid", std::to_string(w.info->pid())},
                        {"draining", w.draining ? "true" : "false"}}),
                1);
    // vLLM's cache info gauge: the KV cache dtype (--kv-cache-dtype) and geometry a worker registered with.
    metrics.set("vllm:cache_config_info",
                labels({{"worker", w.info->worker_id()}, {"role", role}, {"cache_dtype", w.info->kv_cache_dtype()},
                        {"block_size", std::to_string(w.info->block_size())},
                        {"num_gpu_blocks", std::to_string(w.info->num_kv_blocks())}}),
                1);
  });
  for (const char* role : {"prefill", "decode", "both"}) metrics.set("tandem_workers", labels({{"role", role}}), by_role[role]);
  if (auto listed = directory.listed_members()) {
    for (const char* role : {"prefill", "decode", "both"}) {
      metrics.set("tandem_cluster_members", labels({{"role", role}}), (*listed)[role]);
    }
  }
  metrics.set("tandem_prefill_queue_depth", "", directory.prefill_queue_gauge());
  metrics.set("tandem_requests_active", "", static_cast<double>(num_active_requests));
  metrics.set("tandem_router_max_local_prefill", "", router.max_local_prefill);
  metrics.set("tandem_router_max_prefill_queue", "", router.max_prefill_queue);
  return metrics.render();
}

void describe_serving_metrics(Metrics& metrics) {
  metrics.describe("vllm:time_to_first_token_seconds", "histogram", "Time to first token, at the frontend.");
  metrics.describe("vllm:inter_token_latency_seconds", "histogram", "Time between output tokens, at the frontend.");
  metrics.describe("vllm:e2e_request_latency_seconds", "histogram", "Request latency, arrival to last token.");
  metrics.describe("vllm:prompt_tokens_total", "counter", "Prompt tokens of accepted requests.");
  metrics.describe("vllm:generation_tokens_total", "counter", "Output tokens streamed.");
  metrics.describe("vllm:request_success_total", "counter", "Requests finished, by finish reason.");
  metrics.describe("tandem_router_decisions_total", "counter", "Routing decisions, by decision and reason.");
  metrics.describe("tandem_remote_prefills_total", "counter", "Requests whose prefill ran on a prefill worker.");
  metrics.describe("tandem_local_prefills_total", "counter", "Requests prefilled on their decode worker.");
  metrics.describe("tandem_remote_prefill_fallbacks_total", "counter", "Remote prefills that failed and were redone locally.");
  metrics.describe("tandem_prefill_queue_depth", "gauge", "Remote prefills routed and waiting for their first token.");
  metrics.describe("tandem_kv_transfer_bytes_total", "counter", "KV bytes moved from prefill to decode workers.");
  metrics.describe("tandem_kv_transfer_seconds", "histogram", "Time of one request's KV push.");
  metrics.describe("tandem_worker_kv_blocks_used", "gauge", "KV blocks in use on a worker (last heartbeat).");
  metrics.describe("tandem_requests_rejected_total", "counter", "Requests refused by admission control, by reason (429).");
  metrics.describe("tandem_http_connections", "gauge", "HTTP connections open.");
  metrics.describe("tandem_http_connections_closed_total", "counter",
                   "HTTP connections closed by a limit (timeouts, sizes, max connections), by reason.");
  metrics.add("tandem_requests_rejected_total", labels({{"reason", "max_pending"}}), 0);
  metrics.describe("tandem_requests_migrated_total", "counter",
                   "Streams moved to another worker after losing their decode worker mid-stream, by reason.");
  metrics.add("tandem_requests_migrated_total", labels({{"reason", "worker_lost"}}), 0);
  for (const char* name : {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                           "tandem_worker_kv_blocks_total", "tandem_worker_kv_blocks_cached", "tandem_worker_kv_reservations",
                           "tandem_worker_prefills_in_flight", "tandem_workers", "tandem_worker_outstanding_requests",
                           "tandem_requests_active", "tandem_router_max_local_prefill", "tandem_router_max_prefill_queue",
                           "tandem_cluster_members", "tandem_worker_info"}) {
    metrics.describe(name, "gauge", "");
  }
  metrics.describe("vllm:cache_config_info", "gauge", "KV cache of a worker: dtype (--kv-cache-dtype), block size, blocks.");
  for (const char* name : {"vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:num_preemptions_total",
                           "tandem_worker_kv_transfer_bytes_total", "tandem_worker_remote_prefill_fallbacks_total",
                           "tandem_http_requests_total", "tandem_http_errors_total", "tandem_requests_failed_total",
                           "tandem_client_disconnects_total", "tandem_requests_rerouted_total"}) {
    metrics.describe(name, "counter", "");
  }
  for (const char* name : {"tandem_remote_prefills_total", "tandem_local_prefills_total",
                           "tandem_remote_prefill_fallbacks_total", "tandem_kv_transfer_bytes_total",
                           "vllm:prompt_tokens_total", "vllm:generation_tokens_total"}) {
    metrics.add(name, "", 0);
  }
}

}  // namespace tandem::frontend
