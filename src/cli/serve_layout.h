// Where `tandem serve` puts its workers: which devices each one runs on (as many GPUs as its
// tensor-parallel size), what share of those GPUs' memory its KV cache takes, and how many CPU threads
// it gets (DESIGN.md §1: two or more GPUs give prefill and decode workers separate GPUs; one GPU gives
// both roles, memory split between them; no GPU gives CPU workers, whose TP ranks are threads).
// Pure functions of the flags, the number of visible GPUs and of CPU cores, so the rules are testable
// without a GPU. The rules themselves are written out in docs/parallelism.md ("serve's layout").
#pragma once

#include <string>
#include <vector>

namespace tandem::cli {

struct LayoutRequest {
  int num_prefill_workers = 1;
  int num_decode_workers = 1;  // "both" workers when num_prefill_workers == 0
  // "auto" (GPUs when any is visible, else cpu), "cpu", "cuda" (lay out over every visible GPU),
  // "cuda:N" or "cuda:N,M,..." (every worker on these GPUs, as many as its TP size).
  std::string device = "auto";
  std::string prefill_device;  // overrides `device` for prefill workers ("cpu", "cuda:N[,M...]"); empty: none
  std::string decode_device;   // overrides `device` for decode (or both) workers
  int tensor_parallel_size = 1;          // --tensor-parallel-size: every worker's
  int prefill_tensor_parallel_size = 0;  // --prefill-tensor-parallel-size; 0: tensor_parallel_size
  int decode_tensor_parallel_size = 0;   // --decode-tensor-parallel-size (decode or both workers); 0: likewise
  double gpu_memory_utilization = 0.9;   // per GPU, shared by the workers on it
  int num_gpus = 0;                      // visible CUDA devices
  int threads = 0;                       // --threads: per worker (its TP ranks divide them); 0: share the cores
  int num_cpu_cores = 1;                 // for threads == 0
};

struct WorkerPlacement {
  std::string role;  // "prefill", "decode", "both"
  int index = 0;     // within its role
  std::string device;     // "cpu", or "cuda:N" / "cuda:N,M,..." (its ranks' GPUs, rank order), as --device
  std::vector<int> gpus;  // the GPU ordinals of `device`; empty for cpu
  int tensor_parallel_size = 1;
  // --threads: the worker's CPU threads, which a CPU TP worker divides among its ranks.
  int threads = 1;
  // What this worker passes as --gpu-memory-utilization (0 for cpu). The backend sizes the KV cache
  // from the memory free when it starts, so workers sharing GPUs start one after another, and the
  // j-th of k takes u / (k - j u) of what is then free: each ends with u/k of what was free at first.
  // Workers share GPUs only with the same GPU set (plan_layout refuses partial overlaps), so j and k
  // are the same on each of a worker's GPUs.
  double gpu_memory_utilization = 0;
  int share_index = 0;  // j: how many workers on the same GPUs start before this one
  int share_count = 1;  // k: workers on these GPUs
};

// The TP size of prefill workers (prefill == true) or of decode/both workers, and the flag that set it
// ("--prefill-tensor-parallel-size" when given, else "--tensor-parallel-size"), for error messages.
int role_tensor_parallel_size(const LayoutRequest& request, bool prefill);
std::string role_tensor_parallel_flag(const LayoutRequest& request, bool prefill);

// Prefill workers first, then decode workers, in start order. Throws tandem::Error naming the flag for
// a device that does not exist or is malformed, a GPU list whose length is not the worker's TP size, a
// layout that needs more GPUs than are visible, and workers whose GPU sets overlap without being equal.
std::vector<WorkerPlacement> plan_layout(const LayoutRequest& request);

// The one line `serve` prints: "prefill-0 cuda:0 (TP1), decode-0 cuda:2,3 (TP2)", CPU workers with their
// threads ("decode-0 cpu (TP2, 4 threads)"), then "; cuda:4,5 unused" when GPUs are left over.
std::string describe_layout(const std::vector<WorkerPlacement>& placements, int num_gpus);

}  // namespace tandem::cli
