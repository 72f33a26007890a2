// Where `tandem serve` puts its workers: which device each one runs on and what share of that
// device's memory its KV cache takes (DESIGN.md §1: two or more GPUs give prefill and decode workers
// separate GPUs; one GPU gives both roles, memory split between them; no GPU gives CPU workers).
// Pure functions of the flags and the number of visible GPUs, so the rules are testable without one.
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

struct LayoutRequest {
  int num_prefill_workers = 1;
  int num_decode_workers = 1;  // "both" workers when num_prefill_workers == 0
  // "auto" (GPUs when any is visible, else cpu), "cpu", "cuda" (lay out over every visible GPU), "cuda:N".
  std::string device = "auto";
  std::string prefill_device;  // overrides `device` for prefill workers ("cpu", "cuda:N"); empty: none
  std::string decode_device;   // overrides `device` for decode (or both) workers
  double gpu_memory_utilization = 0.9;  // per GPU, shared by the workers on it
  int num_gpus = 0;                     // visible CUDA devices
};

struct WorkerPlacement {
  std::string role;  // "prefill", "decode", "both"
  int index = 0;     // within its role
  std::string device;  // "cpu" or "cuda:N"
  // What this worker passes as --gpu-memory-utilization (0 for cpu). The backend sizes the KV cache
  // from the memory free when it starts, so workers sharing a GPU start one after another, and the
  // j-th of k takes u / (k - j u) of what is then free: each ends with u/k of what was free at first.
  double gpu_memory_utilization = 0;
  int share_index = 0;  // j: how many workers on the same device start before this one
  int share_count = 1;  // k: workers on this device
};

// Prefill workers first, then decode workers, in start order. Throws tandem::Error naming the flag for
// a device that does not exist or is malformed.
std::vector<WorkerPlacement> plan_layout(const LayoutRequest& request);

}  // namespace tandem::cli
