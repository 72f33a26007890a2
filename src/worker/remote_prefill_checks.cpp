// RemotePrefill checks and the push's copy list (see remote_prefill_checks.h).
#include "worker/remote_prefill_checks.h"

namespace tandem::worker {

Status check_remote_prefill(const rpc::pb::RemotePrefill& rp, const LocalKvGeometry& local) {
  if (!rp.dest_kv_dtype().empty() && rp.dest_kv_dtype() != local.kv_dtype) {
    return Status::InvalidArgument("KV cache dtype differs between prefill and decode workers: the decode worker stores " +
                                   rp.dest_kv_dtype() + " KV, this prefill worker " + local.kv_dtype +
                                   " (start both with the same --kv-cache-dtype)");
  }
  if (rp.dest_block_size() != local.block_size || rp.dest_num_layers() != local.num_layers ||
      rp.dest_block_bytes() != local.block_bytes) {
    return Status::InvalidArgument("KV geometry differs between prefill and decode workers");
  }
  // The push skips the blocks the cached prefix fills, counted from num_cached_tokens: a negative count
  // made it read the prefill's block list before its start.
  if (rp.num_cached_tokens() < 0 || rp.num_cached_tokens() > rp.prompt_token_ids_size()) {
    return Status::InvalidArgument("num_cached_tokens " + std::to_string(rp.num_cached_tokens()) + " is outside [0, " +
                                   std::to_string(rp.prompt_token_ids_size()) + "] (the prompt's length)");
  }
  return Status::Ok();
}

StatusOr<std::vector<transfer::BlockCopy>> remote_prefill_copies(const rpc::pb::RemotePrefill& rp,
                                                                 const std::vector<int32_t>& kv_block_ids) {
  if (kv_block_ids.size() < static_cast<size_t>(rp.dest_block_ids_size())) {
    return Status::Internal("prefill returned fewer KV blocks than the prompt needs");
  }
  // Blocks wholly inside the decode worker's cached prefix are already there. Copies go layer-major
  // with the same blocks in every layer (BackendKvMemory::copy_to_peer batches on that).
  const int first_block = rp.num_cached_tokens() / rp.dest_block_size();
  std::vector<transfer::BlockCopy> copies;
  for (int layer = 0; layer < rp.dest_num_layers(); ++layer) {
    for (int b = first_block; b < rp.dest_block_ids_size(); ++b) {
      copies.push_back({layer, kv_block_ids[b], rp.dest_block_ids(b)});
    }
  }
  return copies;
}

}  // namespace tandem::worker
