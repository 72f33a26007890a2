// N tensor-parallel CPU ranks behind one Backend (see tensor_parallel_backend.h).
#include "backend/cpu/tensor_parallel_backend.h"

#include <omp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <exception>

#include "common/error.h"

namespace tandem::backend::cpu {

TensorParallelCpuBackend::TensorParallelCpuBackend(const model::WeightSource& weights, const BackendOptions& options) {
  const int world = options.tensor_parallel_size;
  const std::string flag = "--tensor-parallel-size " + std::to_string(world);
  if (world < 2) throw Error(flag + ": the tensor-parallel backend needs at least 2 ranks");
  weights.validate();
  const model::ModelConfig& c = weights.config();
  const parallel::ModelShape shape = shard_shape(c);
  if (Status split = parallel::check_splittable(shape, world); !split.ok()) {
    throw Error(flag + ": " + weights.describe() + ": " + split.message());
  }
  for (int r = 0; r < world; ++r) plans_.push_back(*parallel::plan_shard(shape, r, world));

  kv_.num_layers = c.num_layers;
  kv_.block_size = options.block_size;
  kv_.num_kv_heads = c.num_kv_heads;
  kv_.head_dim = c.head_dim;
  kv_.dtype = resolve_kv_cache_dtype(options.kv_cache_dtype, "cpu");
  // Every rank holds the same blocks, each with its heads: a block costs the sum of the ranks' shares.
  size_t block_bytes_all_ranks = 0;
  for (const auto& p : plans_) {
    KvCacheSpec rank_kv = kv_;
    rank_kv.num_kv_heads = p.kv_heads.size();
    block_bytes_all_ranks += rank_kv.block_bytes();
  }
  kv_.num_blocks = options.num_kv_blocks > 0
                       ? options.num_kv_blocks
                       : static_cast<int>(options.cpu_kv_cache_bytes / (block_bytes_all_ranks * c.num_layers));
  if (kv_.num_blocks <= 0) throw Error("--kv-cache-bytes is too small for one KV block per layer on every rank");

  BackendOptions rank_options = options;
  rank_options.num_kv_blocks = kv_.num_blocks;
  rank_options.num_threads = 0;  // set per rank thread below, not on this thread
  const int cores = options.num_threads > 0 ? options.num_threads : omp_get_num_procs();
  threads_per_rank_ = std::max(1, cores / world);
  comms_ = parallel::make_cpu_communicators(world);
  for (int r = 0; r < world; ++r) {
    CpuRank rank{.comm = comms_[r].get(), .plan = plans_[r], .inject_faults = r == world - 1};
    ranks_.push_back(std::make_unique<CpuBackend>(weights, rank_options, &rank));
  }
  rank_logits_.resize(world);
  rank_status_.resize(world);
  for (int r = 0; r < world; ++r) threads_.emplace_back([this, r] { rank_loop(r); });
  spdlog::info("cpu backend: model={} layers={} tensor_parallel_size={} threads_per_rank={} kv_heads_per_rank={} "
               "kv_blocks={} kv_tokens={} kv_bytes={} kv_cache_dtype={}",
               weights.describe(), c.num_layers, world, threads_per_rank_, plans_[0].kv_heads.size(), kv_.num_blocks,
               static_cast<int64_t>(kv_.num_blocks) * kv_.block_size, block_bytes_all_ranks * kv_.num_blocks * c.num_layers,
               kv_dtype_name(kv_.dtype));
}

TensorParallelCpuBackend::~TensorParallelCpuBackend() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  job_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void TensorParallelCpuBackend::rank_loop(int rank) {
  // OpenMP's thread count is per calling thread: each rank's parallel regions use its share of the cores.
  omp_set_num_threads(threads_per_rank_);
  uint64_t seen = 0;
  for (;;) {
    const std::function<Status(int)>* job = nullptr;
    {
      std::unique_lock lock(mu_);
      job_cv_.wait(lock, [&] { return stop_ || job_generation_ != seen; });
      if (stop_) return;
      seen = job_generation_;
      job = job_;
    }
    Status status;
    try {
      status = (*job)(rank);
    } catch (const std::exception& e) {
      status = Status::Internal("cpu rank " + std::to_string(rank) + ": " + e.what());
    }
    // The other ranks may be waiting for this one in a collective: release them.
    if (!status.ok()) comms_[rank]->abort(status);
    std::lock_guard lock(mu_);
    rank_status_[rank] = status;
    if (++ranks_done_ == world_size()) done_cv_.notify_all();
  }
}

Status TensorParallelCpuBackend::run_on_ranks(const std::function<Status(int)>& job) {
  std::unique_lock lock(mu_);
  if (!health_.ok()) return health_;
  job_ = &job;
  ranks_done_ = 0;
  ++job_generation_;
  job_cv_.notify_all();
  done_cv_.wait(lock, [&] { return ranks_done_ == world_size(); });
  job_ = nullptr;
  for (const Status& s : rank_status_) {
    if (!s.ok()) {
      health_ = s;
      return s;
    }
  }
  return Status::Ok();
}

Status TensorParallelCpuBackend::device_health() const {
  std::lock_guard lock(mu_);
  return health_;
}

Status TensorParallelCpuBackend::forward(const ForwardBatch& batch, std::span<float> logits) {
  // Refused here, before any rank runs, so a bad batch fails the call and not the group.
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config().vocab_size));
  if (logits.size() != static_cast<size_t>(batch.num_logits()) * config().vocab_size) {
    return Status::InvalidArgument("logits buffer must be [num_logits, vocab_size]");
  }
  for (int r = 1; r < world_size(); ++r) {
    if (rank_logits_[r].size() < logits.size()) rank_logits_[r].resize(logits.size());
  }
  const std::function<Status(int)> job = [&](int r) {
    return ranks_[r]->forward(batch, r == 0 ? logits : std::span<float>(rank_logits_[r].data(), logits.size()));
  };
  return run_on_ranks(job);
}

// A block of the whole model is [2][block_size][num_kv_heads][head_dim] values, then (FP8) the scales
// [2][block_size][num_kv_heads]; rank r's block holds the same rows with its heads plans_[r].kv_heads only.
// Head h of the whole model is read from its home rank (the first of its replicas) and written to every
// rank that holds it.
void TensorParallelCpuBackend::copy_heads(int rank, std::byte* whole, std::byte* local, bool to_local) const {
  const KvCacheSpec& rank_kv = ranks_[rank]->kv_cache_spec();
  const size_t heads = static_cast<size_t>(kv_.num_kv_heads), local_heads = static_cast<size_t>(rank_kv.num_kv_heads);
  const size_t first = static_cast<size_t>(plans_[rank].kv_heads.begin), rows = 2ull * kv_.block_size;
  // The values, then the scales: each region is `rows` rows of one entry of head_bytes per head.
  auto region = [&](size_t whole_offset, size_t local_offset, size_t head_bytes) {
    for (size_t row = 0; row < rows; ++row) {
      std::byte* w = whole + whole_offset + (row * heads + first) * head_bytes;
      std::byte* l = local + local_offset + row * local_heads * head_bytes;
      if (to_local) {
        std::memcpy(l, w, local_heads * head_bytes);
      } else {
        std::memcpy(w, l, local_heads * head_bytes);
      }
    }
  };
  region(0, 0, static_cast<size_t>(kv_.head_dim) * model::dtype_size(kv_.dtype));
  if (kv_.block_scales() > 0) region(kv_.scales_offset_bytes(), rank_kv.scales_offset_bytes(), sizeof(float));
}

Status TensorParallelCpuBackend::read_kv_block(int layer, int block, std::span<std::byte> out) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (out.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  std::vector<std::byte> local;
  for (int r = 0; r < world_size(); ++r) {
    const parallel::ShardPlan& p = plans_[r];
    if (p.rank % p.kv_replicas != 0) continue;  // a replica: its home rank is read instead
    local.resize(ranks_[r]->kv_cache_spec().block_bytes());
    TANDEM_RETURN_IF_ERROR(ranks_[r]->read_kv_block(layer, block, local));
    copy_heads(r, out.data(), local.data(), /*to_local=*/false);
  }
  return Status::Ok();
}

Status TensorParallelCpuBackend::write_kv_block(int layer, int block, std::span<const std::byte> in) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (in.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  std::vector<std::byte> local;
  for (int r = 0; r < world_size(); ++r) {
    local.resize(ranks_[r]->kv_cache_spec().block_bytes());
    // copy_heads only reads `whole` when filling the local block.
    copy_heads(r, const_cast<std::byte*>(in.data()), local.data(), /*to_local=*/true);
    TANDEM_RETURN_IF_ERROR(ranks_[r]->write_kv_block(layer, block, local));
  }
  return Status::Ok();
}

}  // namespace tandem::backend::cpu
