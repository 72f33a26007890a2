// Tensor parallelism on GPUs (`--device cuda[:a,b,...] --tensor-parallel-size N`, docs/parallelism.md):
// N CudaBackends, one per GPU, each holding its rank's shard of the weights (parallel/weight_slices.h)
// and the KV of its heads, driven by one long-lived thread per rank; the engine sees one Backend and one
// scheduler. A step runs the same batch on every rank at once. Inside the step each rank sums the o and
// down projections' partial results with an NCCL all-reduce and gathers the vocabulary-split logits
// before sampling (CudaBackend::reduce_partial_sums, lm_head_and_gather, below); both are on the rank's
// stream, so the decode graphs capture them. Every rank then holds the whole logits; rank 0's tokens,
// logits or draws are the answer (the others take the argmax, which costs nothing collective).
//
// TP 1 through this path (create_tensor_parallel_cuda_backend with one device) runs the same kernels as
// the plain CudaBackend plus a one-rank NCCL all-reduce (a no-op) and gather (a copy), so its results are
// the plain backend's to the bit; that is how one GPU checks the code the multi-GPU runs use.
//
// Failure: a rank whose step fails aborts the NCCL group (ending kernels that wait for it on the other
// GPUs); the step fails with its Status and so does every later one (device_health), as a lost GPU does
// on one device, so the worker fails its requests and exits. A malformed batch is refused before any rank
// runs and does not break the group. TANDEM_INJECT_DEVICE_FAULT_AT_STEP applies to the last rank only.
//
// KV: kv_cache_spec() and read/write_kv_block speak the whole model's layout ([2, block_size,
// num_kv_heads, head_dim] per block), gathered from and scattered to the ranks holding each head, as the
// CPU tensor-parallel backend does, so KV moved over TCP does not depend on either side's TP size. At TP 1
// the CUDA IPC export and peer copies are rank 0's; at TP > 1 they are Unsupported for now (the transfer
// layer falls back to TCP), until the GPU re-split of docs/parallelism.md lands.
//
// Thread-safety: as backend.h; forward() and the KV block calls must not overlap.
#include <cuda_runtime.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_backend_impl.cuh"
#include "backend/cuda/cuda_check.cuh"
#include "backend/cuda/cuda_log.h"
#include "backend/cuda/nccl_communicator.h"
#include "common/error.h"

namespace tandem::backend::cuda {

Status CudaBackend::reduce_partial_sums(int num_tokens) {
  if (!rank_) return Status::Ok();
  return rank_->comm->all_reduce_sum(delta_, static_cast<size_t>(num_tokens) * config_.hidden_size, NcclType::kBFloat16,
                                     stream_);
}

Status CudaBackend::lm_head_and_gather(int rows) {
  const auto& c = config_;
  if (!rank_) return gemm(normed_, rows, c.hidden_size, lm_head_, c.vocab_size, logits_dev_, true);
  // Each rank computes [rows, its vocabulary rows] packed at the front of a [rows, vocab_shard] slot (the
  // last ranks' shards may be shorter); the gather stacks the slots rank by rank, and one strided copy
  // per rank puts its columns in place in the [rows, vocab] logits.
  const parallel::ShardPlan& p = rank_->plan;
  const size_t shard = static_cast<size_t>(p.vocab_shard);
  if (p.vocab.size() > 0) {
    TANDEM_RETURN_IF_ERROR(gemm(normed_, rows, c.hidden_size, lm_head_, p.vocab.size(), shard_logits_, true));
  }
  TANDEM_RETURN_IF_ERROR(rank_->comm->all_gather(shard_logits_, gathered_logits_, rows * shard * sizeof(float), stream_));
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  for (int r = 0; r < p.world; ++r) {
    const size_t begin = std::min(vocab, r * shard), width = std::min(vocab, begin + shard) - begin;
    if (width == 0) continue;
    TANDEM_CUDA_RETURN(cudaMemcpy2DAsync(logits_dev_ + begin, vocab * sizeof(float), gathered_logits_ + r * rows * shard,
                                         width * sizeof(float), width * sizeof(float), rows, cudaMemcpyDeviceToDevice, stream_),
                       device_);
  }
  return Status::Ok();
}

namespace {

class TensorParallelCudaBackend final : public Backend {
 public:
  TensorParallelCudaBackend(const model::WeightSource& weights, const BackendOptions& options, std::vector<int> devices);
  ~TensorParallelCudaBackend() override;

  const model::ModelConfig& config() const override { return config_; }
  const KvCacheSpec& kv_cache_spec() const override { return kv_; }
  std::string device_name() const override { return name_; }
  Status forward(const ForwardBatch& batch, std::span<float> logits) override;
  Status forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) override;
  bool samples_on_device() const override { return true; }
  Status forward_sampled(const ForwardBatch& batch, const DeviceSamplingStep& step) override;
  Status device_health() const override;
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override;
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override;
  StatusOr<KvExport> export_kv_handles() override;
  bool can_reach_peer(const KvExport& peer) override { return world() == 1 && ranks_[0]->can_reach_peer(peer); }
  Status copy_blocks_from_peer(const KvExport& peer, std::span<const int32_t> peer_blocks, std::span<const int32_t> local_blocks,
                               int layer_begin, int layer_end) override;
  Status copy_blocks_to_peer(const KvExport& peer, std::span<const int32_t> local_blocks, std::span<const int32_t> peer_blocks,
                             int layer_begin, int layer_end) override;
  // KV links: rank 0's at TP 1; none at TP > 1 (KV moves over TCP, re-split by read/write_kv_block).
  std::string kv_link_device() override { return world() == 1 ? ranks_[0]->kv_link_device() : ""; }
  StatusOr<std::string> make_kv_link_id() override {
    if (world() > 1) return Status::Unsupported(name_ + ": KV links of a tensor-parallel KV cache are not implemented");
    return ranks_[0]->make_kv_link_id();
  }
  StatusOr<std::unique_ptr<KvLink>> open_kv_link(const std::string& link_id, int rank, int timeout_ms) override {
    if (world() > 1) return Status::Unsupported(name_ + ": KV links of a tensor-parallel KV cache are not implemented");
    return ranks_[0]->open_kv_link(link_id, rank, timeout_ms);
  }

 private:
  int world() const { return static_cast<int>(ranks_.size()); }
  // Runs job(rank) on every rank's thread and waits for all; the lowest rank's failure, if any.
  Status run_on_ranks(const std::function<Status(int)>& job);
  void rank_loop(int rank);
  // The step every rank but 0 runs: the same batch, the argmax into scratch (nothing to return).
  Status follower_step(int rank, const ForwardBatch& batch);

  model::ModelConfig config_;  // the whole model's
  KvCacheSpec kv_;             // the whole model's heads; blocks: the fewest any rank holds
  std::string name_;
  std::vector<int> devices_;
  std::vector<parallel::ShardPlan> plans_;
  std::vector<std::unique_ptr<NcclCommunicator>> comms_;
  std::vector<std::unique_ptr<CudaBackend>> ranks_;
  std::vector<std::vector<int32_t>> scratch_tokens_;  // ranks >= 1

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

parallel::ModelShape shape_of(const model::ModelConfig& c) {
  return parallel::ModelShape{.num_heads = c.num_heads,
                              .num_kv_heads = c.num_kv_heads,
                              .head_dim = c.head_dim,
                              .intermediate_size = c.intermediate_size,
                              .vocab_size = c.vocab_size};
}

TensorParallelCudaBackend::TensorParallelCudaBackend(const model::WeightSource& weights, const BackendOptions& options,
                                                     std::vector<int> devices)
    : config_(weights.config()), devices_(std::move(devices)) {
  const int world = static_cast<int>(devices_.size());
  const std::string flag = "--tensor-parallel-size " + std::to_string(world);
  weights.validate();
  if (Status split = parallel::check_splittable(shape_of(config_), world); !split.ok()) {
    throw Error(flag + ": " + weights.describe() + ": " + split.message());
  }
  for (int r = 0; r < world; ++r) plans_.push_back(*parallel::plan_shard(shape_of(config_), r, world));
  name_ = "cuda:";
  for (int r = 0; r < world; ++r) name_ += (r ? "," : "") + std::to_string(devices_[r]);
  if (Status nccl = nccl_available(); !nccl.ok()) throw Error(flag + " --device " + options.device + ": " + nccl.message());
  auto comms = make_nccl_communicators(devices_);
  if (!comms.ok()) throw Error(flag + " --device " + options.device + ": setting up NCCL failed: " + comms.status().message());
  comms_ = std::move(*comms);

  // The ranks load at once (one thread each: the reads and uploads of different GPUs overlap).
  ranks_.resize(world);
  std::vector<std::string> errors(world);
  {
    std::vector<std::thread> loaders;
    for (int r = 0; r < world; ++r) {
      loaders.emplace_back([&, r] {
        try {
          BackendOptions rank_options = options;
          rank_options.device = "cuda:" + std::to_string(devices_[r]);
          rank_options.tensor_parallel_size = 1;
          CudaRank rank{.plan = plans_[r], .comm = comms_[r].get(), .inject_faults = r == world - 1};
          ranks_[r] = std::make_unique<CudaBackend>(weights, rank_options, &rank);
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    }
    for (auto& t : loaders) t.join();
  }
  for (int r = 0; r < world; ++r) {
    if (errors[r].empty()) continue;
    ranks_.clear();
    destroy_nccl_communicators(comms_);
    throw Error(flag + ": rank " + std::to_string(r) + " (cuda:" + std::to_string(devices_[r]) + "): " + errors[r]);
  }
  kv_ = ranks_[0]->kv_cache_spec();
  kv_.num_kv_heads = config_.num_kv_heads;
  if (world > 1 && kv_.dtype == model::DType::kF8E4M3) {
    // read/write_kv_block re-split bf16 rows by head; an FP8 block's scale region is not re-split yet.
    ranks_.clear();
    destroy_nccl_communicators(comms_);
    throw Error("--kv-cache-dtype fp8 with --tensor-parallel-size " + std::to_string(world) +
                " on CUDA is not supported yet; use --kv-cache-dtype bf16 or --tensor-parallel-size 1");
  }
  for (const auto& rank : ranks_) kv_.num_blocks = std::min(kv_.num_blocks, rank->kv_cache_spec().num_blocks);
  scratch_tokens_.resize(world);
  rank_status_.resize(world);
  for (int r = 0; r < world; ++r) threads_.emplace_back([this, r] { rank_loop(r); });
  log_info("cuda backend: tensor_parallel_size=" + std::to_string(world) + " devices=" + name_ + " nccl=" + nccl_version() +
           " kv_heads_per_rank=" + std::to_string(plans_[0].kv_heads.size()) + " kv_blocks=" + std::to_string(kv_.num_blocks));
}

TensorParallelCudaBackend::~TensorParallelCudaBackend() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  job_cv_.notify_all();
  for (auto& t : threads_) t.join();
  // The rank backends synchronize their streams before the communicators they use go.
  ranks_.clear();
  destroy_nccl_communicators(comms_);
}

void TensorParallelCudaBackend::rank_loop(int rank) {
  cudaSetDevice(devices_[rank]);
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
    const Status status = [&]() -> Status {
      try {
        return (*job)(rank);
      } catch (const std::exception& e) {
        return Status::Internal("cuda rank " + std::to_string(rank) + ": " + e.what());
      }
    }();
    // The other ranks may be waiting for this one inside an NCCL kernel: abort the group to release them.
    if (!status.ok()) comms_[rank]->abort(status);
    std::lock_guard lock(mu_);
    // (void): nvcc warns on the discarded Status& of an assignment.
    static_cast<void>(rank_status_[rank] = status);
    if (++ranks_done_ == world()) done_cv_.notify_all();
  }
}

Status TensorParallelCudaBackend::run_on_ranks(const std::function<Status(int)>& job) {
  std::unique_lock lock(mu_);
  if (!health_.ok()) return health_;
  job_ = &job;
  ranks_done_ = 0;
  ++job_generation_;
  job_cv_.notify_all();
  done_cv_.wait(lock, [&] { return ranks_done_ == world(); });
  job_ = nullptr;
  for (const Status& s : rank_status_) {
    if (!s.ok()) return health_ = s;
  }
  return Status::Ok();
}

Status TensorParallelCudaBackend::device_health() const {
  std::lock_guard lock(mu_);
  return health_;
}

Status TensorParallelCudaBackend::follower_step(int rank, const ForwardBatch& batch) {
  std::vector<int32_t>& tokens = scratch_tokens_[rank];
  tokens.resize(static_cast<size_t>(batch.num_logits()));
  return ranks_[rank]->forward_greedy(batch, tokens);
}

Status TensorParallelCudaBackend::forward(const ForwardBatch& batch, std::span<float> logits) {
  // Refused here, before any rank runs, so a bad batch fails the call and not the group.
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  if (logits.size() != static_cast<size_t>(batch.num_logits()) * config_.vocab_size) {
    return Status::InvalidArgument("logits buffer must be [num_logits, vocab_size]");
  }
  if (batch.num_tokens() == 0) return Status::Ok();
  const std::function<Status(int)> job = [&](int r) { return r == 0 ? ranks_[0]->forward(batch, logits) : follower_step(r, batch); };
  return run_on_ranks(job);
}

Status TensorParallelCudaBackend::forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) {
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  if (tokens.size() != static_cast<size_t>(batch.num_logits())) return Status::InvalidArgument("tokens buffer must be [num_logits]");
  if (batch.num_tokens() == 0) return Status::Ok();
  const std::function<Status(int)> job = [&](int r) { return r == 0 ? ranks_[0]->forward_greedy(batch, tokens) : follower_step(r, batch); };
  return run_on_ranks(job);
}

Status TensorParallelCudaBackend::forward_sampled(const ForwardBatch& batch, const DeviceSamplingStep& step) {
  TANDEM_RETURN_IF_ERROR(validate_batch(batch, kv_, config_.vocab_size));
  // Everything rank 0 would refuse is refused here, before any rank runs: a refusal inside the step would
  // abort the group (the others are already in its collectives) and fail the worker for one bad request.
  const size_t n = static_cast<size_t>(batch.num_logits());
  if (step.tokens.size() != n || step.rows.size() != n) return Status::InvalidArgument("rows and tokens must be [num_logits]");
  bool any_logprobs = false;
  for (const RowSampling& r : step.rows) {
    if (r.edits_begin < 0 || r.edits_end < r.edits_begin || static_cast<size_t>(r.edits_end) > step.edits.size()) {
      return Status::InvalidArgument("a row's edits are outside the step's edit list");
    }
    if (r.num_logprobs > kMaxTopLogprobs) return Status::InvalidArgument("at most 20 top logprobs");
    any_logprobs = any_logprobs || r.num_logprobs >= 0;
  }
  if (any_logprobs && step.logprobs.size() != n) return Status::InvalidArgument("logprobs must be [num_logits]");
  if (batch.num_tokens() == 0) return Status::Ok();
  // Rank 0 draws; the draw itself is no collective, so the others need not.
  const std::function<Status(int)> job = [&](int r) { return r == 0 ? ranks_[0]->forward_sampled(batch, step) : follower_step(r, batch); };
  return run_on_ranks(job);
}

// A block of the whole model is [2][block_size][num_kv_heads][head_dim]; rank r's holds the same rows
// with its heads plans_[r].kv_heads only. Head h is read from its home rank (the first of its replicas)
// and written to every rank that holds it.
Status TensorParallelCudaBackend::read_kv_block(int layer, int block, std::span<std::byte> out) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (out.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  if (world() == 1) return ranks_[0]->read_kv_block(layer, block, out);
  const size_t head_bytes = static_cast<size_t>(kv_.head_dim) * model::dtype_size(kv_.dtype);
  const size_t heads = static_cast<size_t>(kv_.num_kv_heads), rows = 2ull * kv_.block_size;
  std::vector<std::byte> local;
  for (int r = 0; r < world(); ++r) {
    const parallel::ShardPlan& p = plans_[r];
    if (p.rank % p.kv_replicas != 0) continue;  // a replica: its home rank is read instead
    const size_t local_heads = static_cast<size_t>(p.kv_heads.size());
    local.resize(ranks_[r]->kv_cache_spec().block_bytes());
    TANDEM_RETURN_IF_ERROR(ranks_[r]->read_kv_block(layer, block, local));
    for (size_t row = 0; row < rows; ++row) {
      std::memcpy(out.data() + (row * heads + p.kv_heads.begin) * head_bytes, local.data() + row * local_heads * head_bytes,
                  local_heads * head_bytes);
    }
  }
  return Status::Ok();
}

Status TensorParallelCudaBackend::write_kv_block(int layer, int block, std::span<const std::byte> in) {
  if (layer < 0 || layer >= kv_.num_layers || block < 0 || block >= kv_.num_blocks) return Status::InvalidArgument("KV block out of range");
  if (in.size() != kv_.block_bytes()) return Status::InvalidArgument("KV block buffer has the wrong size");
  if (world() == 1) return ranks_[0]->write_kv_block(layer, block, in);
  const size_t head_bytes = static_cast<size_t>(kv_.head_dim) * model::dtype_size(kv_.dtype);
  const size_t heads = static_cast<size_t>(kv_.num_kv_heads), rows = 2ull * kv_.block_size;
  std::vector<std::byte> local;
  for (int r = 0; r < world(); ++r) {
    const parallel::ShardPlan& p = plans_[r];
    const size_t local_heads = static_cast<size_t>(p.kv_heads.size());
    local.resize(ranks_[r]->kv_cache_spec().block_bytes());
    for (size_t row = 0; row < rows; ++row) {
      std::memcpy(local.data() + row * local_heads * head_bytes, in.data() + (row * heads + p.kv_heads.begin) * head_bytes,
                  local_heads * head_bytes);
    }
    TANDEM_RETURN_IF_ERROR(ranks_[r]->write_kv_block(layer, block, local));
  }
  return Status::Ok();
}

StatusOr<KvExport> TensorParallelCudaBackend::export_kv_handles() {
  if (world() > 1) return Status::Unsupported(name_ + ": CUDA IPC export of a tensor-parallel KV cache is not implemented; KV moves over TCP");
  StatusOr<KvExport> e = ranks_[0]->export_kv_handles();
  if (e.ok()) e->spec.num_blocks = kv_.num_blocks;
  return e;
}

Status TensorParallelCudaBackend::copy_blocks_from_peer(const KvExport& peer, std::span<const int32_t> peer_blocks,
                                                        std::span<const int32_t> local_blocks, int layer_begin, int layer_end) {
  if (world() > 1) return Status::Unavailable(name_ + ": peer copies of a tensor-parallel KV cache are not implemented");
  return ranks_[0]->copy_blocks_from_peer(peer, peer_blocks, local_blocks, layer_begin, layer_end);
}

Status TensorParallelCudaBackend::copy_blocks_to_peer(const KvExport& peer, std::span<const int32_t> local_blocks,
                                                      std::span<const int32_t> peer_blocks, int layer_begin, int layer_end) {
  if (world() > 1) return Status::Unavailable(name_ + ": peer copies of a tensor-parallel KV cache are not implemented");
  return ranks_[0]->copy_blocks_to_peer(peer, local_blocks, peer_blocks, layer_begin, layer_end);
}

}  // namespace

std::unique_ptr<Backend> create_tensor_parallel_cuda_backend(const model::WeightSource& weights, const BackendOptions& options) {
  StatusOr<std::vector<int>> devices = parse_cuda_devices(options.device, options.tensor_parallel_size, cuda_device_count());
  if (!devices.ok()) throw Error(devices.status().message());
  return std::make_unique<TensorParallelCudaBackend>(weights, options, std::move(*devices));
}

}  // namespace tandem::backend::cuda
