// Fuzz target: a NATS prefill-queue message's payload as a prefill worker's pull loop takes it
// (worker/prefill_server.cpp): an Envelope that must hold a RemotePrefill, checked against this worker's
// KV geometry (check_remote_prefill), then — as if the prefill had run and returned the prompt's blocks —
// turned into the KV push's copy list (remote_prefill_copies). libnats parses the NATS protocol itself;
// this is what Tandem reads from the message. Every copy must read one of the prefill's own blocks.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/remote_prefill_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::rpc::pb::Envelope env;
  if (!env.ParseFromArray(data, static_cast<int>(size)) || !env.has_remote_prefill()) return 0;
  const tandem::rpc::pb::RemotePrefill& rp = env.remote_prefill();
  // A small CPU worker's cache: 16-token blocks, 2 layers.
  const tandem::worker::LocalKvGeometry local{"fp32", 16, 2, 4096};
  if (!tandem::worker::check_remote_prefill(rp, local).ok()) return 0;
  // The prefill's blocks: one per 16 prompt tokens (ids 100, 101, ...), capped to keep inputs cheap.
  const int64_t prompt_blocks = (static_cast<int64_t>(rp.prompt_token_ids_size()) + 15) / 16;
  std::vector<int32_t> kv_block_ids;
  for (int64_t b = 0; b < prompt_blocks && b < 4096; ++b) kv_block_ids.push_back(static_cast<int32_t>(100 + b));
  auto copies = tandem::worker::remote_prefill_copies(rp, kv_block_ids);
  if (!copies.ok()) return 0;
  for (const auto& c : *copies) {
    if (c.layer < 0 || c.layer >= local.num_layers) __builtin_trap();
    if (c.src_block < 100 || c.src_block >= 100 + static_cast<int32_t>(kv_block_ids.size())) __builtin_trap();
  }
  return 0;
}
