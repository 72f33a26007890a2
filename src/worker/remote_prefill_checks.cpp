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

bool kv_descriptor_matches(const nlohmann::json& descriptor, const rpc::pb::RemotePrefill& rp) {
  // nlohmann's value<int>() throws on a string and converts a float such as 1e300 with an undefined
  // cast: each field's type is checked before it is read.
  auto string_is = [&](const char* key, const std::string& want) {
    auto it = descriptor.find(key);
    return it != descriptor.end() && it->is_string() && it->get_ref<const std::string&>() == want;
  };
  auto integer_is = [&](const char* key, int64_t want) {
    auto it = descriptor.find(key);
    if (it == descriptor.end() || !it->is_number_integer()) return false;
    if (it->is_number_unsigned()) return want >= 0 && it->get<uint64_t>() == static_cast<uint64_t>(want);
    return it->get<int64_t>() == want;
  };
  if (!descriptor.is_object()) return false;
  return string_is("transfer_address", rp.transfer_address()) && integer_is("block_size", rp.dest_block_size()) &&
         integer_is("num_layers", rp.dest_num_layers()) && integer_is("block_bytes", rp.dest_block_bytes()) &&
         (!descriptor.contains("kv_cache_dtype") || string_is("kv_cache_dtype", rp.dest_kv_dtype()));
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
