// What a prefill worker checks in a RemotePrefill before it trusts it, and the KV copies it derives from
// one. The message comes from outside the process — a decode worker's request-plane frame, or a NATS
// prefill-queue payload that anyone with queue credentials can publish — so every field that later
// indexes memory or sizes work is checked here, and these pure functions are what
// tests/fuzz/prefill_queue_message_fuzz feeds.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "rpc/messages.pb.h"
#include "transfer/transfer.h"

namespace tandem::worker {

// This worker's KV cache as a RemotePrefill must match it.
struct LocalKvGeometry {
  std::string kv_dtype;  // backend::kv_dtype_name
  int block_size = 0;
  int num_layers = 0;
  int64_t block_bytes = 0;
};

// Ok, or InvalidArgument naming what is wrong: a KV dtype or geometry unlike ours, or a cached-token
// count outside [0, prompt length].
Status check_remote_prefill(const rpc::pb::RemotePrefill& rp, const LocalKvGeometry& local);

// Whether the decode worker's KV descriptor (its JSON record in etcd: transfer_address, block_size,
// num_layers, block_bytes and, when present, kv_cache_dtype) agrees with what `rp` says. A field missing
// or of another type is a disagreement: the record is read from etcd, not trusted to be well formed.
bool kv_descriptor_matches(const nlohmann::json& descriptor, const rpc::pb::RemotePrefill& rp);

// The copies that push a finished prefill's KV (`kv_block_ids`: the prompt's blocks here, in order) into
// the decode worker's blocks: every layer of each destination block past the blocks its cached prefix
// already fills, layer-major. Internal when fewer blocks came back than the destination names.
// REQUIRES: check_remote_prefill(rp, ...) was Ok.
StatusOr<std::vector<transfer::BlockCopy>> remote_prefill_copies(const rpc::pb::RemotePrefill& rp,
                                                                 const std::vector<int32_t>& kv_block_ids);

}  // namespace tandem::worker
