// TensorParallelCpuBackend: `--device cpu --tensor-parallel-size N`, N ranks as threads of one process
// (DESIGN.md §4 "Parallelism"). It owns N CpuBackends, each holding its rank's shard of the weights and
// KV heads (parallel/shard_plan.h), one CPU communicator group, and one thread per rank that lives as
// long as the backend. The engine sees one Backend: each forward() runs the same batch on every rank at
// once and returns when all are done; rank 0's gathered logits are the answer.
//
// A rank that fails (an exception, a device-like failure, TANDEM_INJECT_DEVICE_FAULT_AT_STEP, which this
// backend applies to its last rank only) aborts the communicator group, so no rank waits in a collective
// forever; the step fails with that Status and so does every later one (device_health), as a lost GPU
// does. A malformed batch is refused before any rank runs and does not break the group.
//
// KV: kv_cache_spec() and read/write_kv_block speak the whole model's layout ([2, block_size,
// num_kv_heads, head_dim] per block, as at world 1), gathered from and scattered to the ranks that hold
// each head, so KV moved over TCP is independent of the TP size on either side.
//
// Thread-safety: as backend.h; forward() and the KV block calls must not overlap.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace tandem::backend::cpu {

class TensorParallelCpuBackend : public Backend {
 public:
  // options.tensor_parallel_size ranks (>= 2). Throws tandem::Error naming --tensor-parallel-size when the
  // model does not split that way. KV blocks: options.num_kv_blocks, or as many as cpu_kv_cache_bytes
  // holds over all ranks together. Threads: options.num_threads (0 = all cores) divided among the ranks.
  TensorParallelCpuBackend(const model::WeightSource& weights, const BackendOptions& options);
  ~TensorParallelCpuBackend() override;

  const model::ModelConfig& config() const override { return ranks_[0]->config(); }
  const KvCacheSpec& kv_cache_spec() const override { return kv_; }
  std::string device_name() const override { return "cpu"; }
  Status forward(const ForwardBatch& batch, std::span<float> logits) override;
  Status device_health() const override;
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override;
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override;

  int world_size() const { return static_cast<int>(ranks_.size()); }

 private:
  // Runs job(rank) on every rank's thread and waits for all; the lowest rank's failure, if any.
  Status run_on_ranks(const std::function<Status(int)>& job);
  void rank_loop(int rank);
  // Copies rank `rank`'s KV heads of one block between the whole model's block and the rank's own (both
  // regions: values, then the FP8 scales), into `local` when to_local, else into `whole`.
  void copy_heads(int rank, std::byte* whole, std::byte* local, bool to_local) const;

  KvCacheSpec kv_;  // the whole model's heads
  std::vector<parallel::ShardPlan> plans_;
  std::vector<std::unique_ptr<parallel::Communicator>> comms_;
  std::vector<std::unique_ptr<CpuBackend>> ranks_;
  std::vector<std::vector<float>> rank_logits_;  // ranks >= 1: [num_logits, vocab], what their gather gives
  int threads_per_rank_ = 1;

  mutable std::mutex mu_;
  std::condition_variable job_cv_, done_cv_;
  const std::function<Status(int)>* job_ = nullptr;  // guarded by mu_; valid while a run is in progress
  uint64_t job_generation_ = 0;
  int ranks_done_ = 0;
  std::vector<Status> rank_status_;
  Status health_;  // the first rank failure; sticky
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tandem::backend::cpu
