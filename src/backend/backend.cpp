#include "backend/backend.h"

#include <vector>

#include "backend/cpu/cpu_backend.h"
#ifdef TANDEM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "common/error.h"

namespace tandem::backend {

Status validate_batch(const ForwardBatch& b, const KvCacheSpec& kv, int vocab_size) {
  const int num_seqs = b.num_seqs();
  if (b.positions.size() != b.token_ids.size()) return Status::InvalidArgument("positions and token_ids differ in length");
  if (b.query_starts.size() != static_cast<size_t>(num_seqs) + 1) return Status::InvalidArgument("query_starts must have num_seqs + 1 entries");
  if (b.max_blocks_per_seq <= 0 && num_seqs > 0) return Status::InvalidArgument("max_blocks_per_seq must be positive");
  if (b.block_tables.size() != static_cast<size_t>(num_seqs) * b.max_blocks_per_seq) return Status::InvalidArgument("block_tables must be [num_seqs, max_blocks_per_seq]");
  if (num_seqs > 0 && (b.query_starts[0] != 0 || b.query_starts[num_seqs] != b.num_tokens())) return Status::InvalidArgument("query_starts must run from 0 to num_tokens");
  for (int32_t id : b.token_ids) {
    if (id < 0 || id >= vocab_size) return Status::InvalidArgument("token id " + std::to_string(id) + " out of range [0, " + std::to_string(vocab_size) + ")");
  }
  for (int s = 0; s < num_seqs; ++s) {
    const int begin = b.query_starts[s], end = b.query_starts[s + 1];
    const int context = b.context_lens[s];
    if (end < begin) return Status::InvalidArgument("query_starts must not decrease");
    if (context < end - begin) return Status::InvalidArgument("context_lens[" + std::to_string(s) + "] is shorter than its new tokens");
    const int blocks_needed = (context + kv.block_size - 1) / kv.block_size;
    if (blocks_needed > b.max_blocks_per_seq) return Status::InvalidArgument("sequence " + std::to_string(s) + " needs more blocks than max_blocks_per_seq");
    for (int i = 0; i < blocks_needed; ++i) {
      int block = b.block_tables[static_cast<size_t>(s) * b.max_blocks_per_seq + i];
      if (block < 0 || block >= kv.num_blocks) return Status::InvalidArgument("block id " + std::to_string(block) + " out of range for sequence " + std::to_string(s));
    }
    for (int t = begin; t < end; ++t) {
      if (b.positions[t] != context - (end - t)) return Status::InvalidArgument("positions of sequence " + std::to_string(s) + " must end at context_lens - 1");
    }
  }
  for (int32_t row : b.logits_indices) {
    if (row < 0 || row >= b.num_tokens()) return Status::InvalidArgument("logits index out of range");
  }
  return Status::Ok();
}

Status Backend::forward_greedy(const ForwardBatch& batch, std::span<int32_t> tokens) {
  const int vocab = config().vocab_size;
  if (tokens.size() != static_cast<size_t>(batch.num_logits())) return Status::InvalidArgument("tokens buffer must be [num_logits]");
  std::vector<float> logits(static_cast<size_t>(batch.num_logits()) * vocab);
  TANDEM_RETURN_IF_ERROR(forward(batch, logits));
  for (size_t r = 0; r < tokens.size(); ++r) {
    const float* row = logits.data() + r * vocab;
    int32_t best = 0;
    for (int i = 1; i < vocab; ++i) {
      if (row[i] > row[best]) best = i;
    }
    tokens[r] = best;
  }
  return Status::Ok();
}

std::unique_ptr<Backend> create_backend(const model::WeightSource& weights, const BackendOptions& options) {
  if (options.block_size <= 0) throw Error("--block-size must be positive");
  if (options.device == "cpu") return std::make_unique<cpu::CpuBackend>(weights, options);
  if (options.device.rfind("cuda", 0) == 0) {
#ifdef TANDEM_HAVE_CUDA
    return cuda::create_cuda_backend(weights, options);
#else
    throw Error("--device " + options.device + ": this build has no CUDA (configure with nvcc available and -DTANDEM_CUDA=ON), use --device cpu");
#endif
  }
  throw Error("--device: unknown device '" + options.device + "' (use cpu or cuda:N)");
}

}  // namespace tandem::backend
