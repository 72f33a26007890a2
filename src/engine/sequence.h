// Sequence: the engine's record of one choice of one request — its tokens, how many of them have KV in
// the cache, and the KV blocks that hold them. Scheduler and BlockManager work on sequences only;
// sampling and stop state live with the engine (which derives its own record from Sequence).
//
// Ownership: the engine owns every Sequence; the scheduler holds non-owning pointers while the sequence
// is waiting or running. Thread-safety: none; touched only by the engine loop (or a test's one thread).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem::engine {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  virtual ~Sequence() = default;

  int64_t seq_id = 0;
  // Prompt then output tokens. Tokens [0, num_computed_tokens) have KV in block_table's blocks; the
  // rest are computed by the next steps. A sequence that needs a new token has every token computed
  // but the last one (the last sampled token, or the prompt's last token).
  std::vector<int32_t> token_ids;
  int num_prompt_tokens = 0;
  int num_computed_tokens = 0;
  int num_cached_prompt_tokens = 0;  // leading tokens found in the prefix cache at the last admission
  std::vector<int32_t> block_table;  // block i holds tokens [i * block_size, (i + 1) * block_size)
  // Chained hash of every full block of token_ids, in order (BlockManager::update_block_hashes keeps it
  // current). Entry i covers all tokens of blocks 0..i plus the cache salt.
  std::vector<uint64_t> block_hashes;
  int num_published_blocks = 0;  // leading blocks of block_table already offered to the prefix cache
  SequenceStatus status = SequenceStatus::kWaiting;
  int num_seats = 1;  // places under max_seqs it holds: itself plus the siblings it has yet to fork
  // Set by the scheduler when the sequence lost its blocks and went back to wait (it recomputes them).
  bool preempted = false;
  int64_t scheduled_step = -1;  // the scheduler's step that last scheduled it

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  std::span<const int32_t> prompt() const { return {token_ids.data(), static_cast<size_t>(num_prompt_tokens)}; }
  std::span<const int32_t> output() const {
    return {token_ids.data() + num_prompt_tokens, static_cast<size_t>(num_output_tokens())};
  }
};

}  // namespace tandem::engine
