#include "backend/reference_decode.h"

#include <numeric>

namespace tandem::backend {

StatusOr<ReferenceDecodeResult> reference_greedy_decode(Backend& backend, const std::vector<int32_t>& prompt,
                                                        int max_tokens) {
  if (prompt.empty()) return Status::InvalidArgument("prompt must not be empty");
  const KvCacheSpec& kv = backend.kv_cache_spec();
  const int total = static_cast<int>(prompt.size()) + max_tokens;
  const int blocks = (total + kv.block_size - 1) / kv.block_size;
  if (blocks > kv.num_blocks) {
    return Status::ResourceExhausted("sequence of " + std::to_string(total) + " tokens needs " + std::to_string(blocks) +
                                     " KV blocks; the backend has " + std::to_string(kv.num_blocks));
  }
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  const int vocab = backend.config().vocab_size;
  std::vector<float> logits(vocab);
  ReferenceDecodeResult result;

  std::vector<int32_t> ids = prompt;
  std::vector<int32_t> positions(prompt.size());
  std::iota(positions.begin(), positions.end(), 0);
  int context = static_cast<int>(prompt.size());
  for (int step = 0; step <= max_tokens; ++step) {
    const int32_t query_starts[2] = {0, static_cast<int32_t>(ids.size())};
    const int32_t context_lens[1] = {context};
    const int32_t logits_index[1] = {static_cast<int32_t>(ids.size()) - 1};
    ForwardBatch batch{ids, positions, query_starts, context_lens, table, blocks, logits_index};
    TANDEM_RETURN_IF_ERROR(backend.forward(batch, logits));
    if (step == 0) result.prefill_logits = logits;
    if (step == max_tokens) break;
    const int32_t next = argmax(logits);
    result.tokens.push_back(next);
    ids = {next};
    positions = {context};
    ++context;
  }
  return result;
}

}  // namespace tandem::backend
