// Scheduler: continuous batching over sequences. Each step has a token budget (max_batch_tokens) and a
// sequence cap (max_seqs). Running decodes go first (oldest first, one token each), then running
// sequences with more to compute (an unfinished prefill's next chunk); then waiting sequences are
// admitted in arrival order, their prompts chunked into what is left of the budget, reusing
// prefix-cached blocks. When a running sequence needs a block and none is free, the newest running
// sequence not yet scheduled in the step is preempted: its blocks are freed (the full ones stay in the
// prefix cache) and it waits at the head of the queue to be recomputed (vLLM's recompute policy; no
// swapping to host memory). No waiting sequence is admitted in a step that preempted.
//
// The scheduler decides; it never touches device memory (the model runner turns its output into a
// ForwardBatch) and never samples. Ownership: holds non-owning Sequence pointers; the caller keeps each
// sequence alive until finish() has been called on it (or it was never added).
// Thread-safety: none (the engine loop's thread, under the engine's mutex).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace tandem::engine {

struct SchedulerConfig {
  int max_batch_tokens = 2048;
  int max_seqs = 256;
};

struct ScheduledSeq {
  Sequence* seq;
  int num_new_tokens;  // tokens [num_computed_tokens, num_computed_tokens + num_new_tokens) this step
  bool needs_sample;   // the step reaches the sequence's last token: its logits give the next token
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;      // running sequences first, then newly admitted ones
  std::vector<Sequence*> preempted;    // lost their blocks during this schedule() (now waiting)
  int num_batched_tokens = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  // REQUIRES: block_manager outlives the scheduler.
  Scheduler(const SchedulerConfig& config, BlockManager* block_manager);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a sequence with no blocks. `seats` > 1 reserves room under max_seqs for the siblings it will
  // fork (n > 1) once admitted. REQUIRES: seats <= max_seqs.
  void add_waiting(Sequence* seq, int seats = 1);
  // Adds a sequence that already holds blocks covering its num_computed_tokens (KV written elsewhere:
  // a decode-from-KV request) straight to the running set.
  void add_running(Sequence* seq);
  // Makes `child` (tokens set by the caller, no blocks) share the full blocks of `parent`'s computed
  // prefix and run; it recomputes the partially filled last block rather than copying it, which keeps
  // copy-on-write out of the backend. Consumes one of parent's seats.
  // REQUIRES: parent is running; child.token_ids starts with parent's computed tokens.
  void fork(Sequence* parent, Sequence* child);

  // Plans one step. The result stays valid until the next schedule(). Never fails: an empty result
  // means nothing can run now (nothing queued, or waiting for blocks held outside the scheduler).
  const SchedulerOutput& schedule();
  // After the step's forward pass succeeded: advances num_computed_tokens of every scheduled sequence
  // and publishes its newly full blocks to the prefix cache.
  void complete_step();

  // Removes `seq` from the queues, frees its blocks and marks it finished. No-op if already finished.
  void finish(Sequence* seq);
  // Like finish(), but hands the sequence's block table to the caller (who must free it later through
  // BlockManager::free) instead of freeing it.
  std::vector<int32_t> finish_keep_blocks(Sequence* seq);

  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  int64_t num_preemptions() const { return num_preemptions_; }
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }

 private:
  void preempt_at(size_t index);
  void remove(Sequence* seq);

  const SchedulerConfig config_;
  BlockManager* const blocks_;
  std::vector<Sequence*> running_;  // admission order, oldest first
  std::deque<Sequence*> waiting_;   // arrival order; preempted sequences go back to the front
  int reserved_seats_ = 0;          // seats held by running sequences for siblings not forked yet
  int64_t num_preemptions_ = 0;
  int64_t step_ = 0;  // schedule() calls so far; stamps Sequence::scheduled_step
  SchedulerOutput output_;
  std::vector<int32_t> cached_blocks_;  // scratch for prefix lookups
};

}  // namespace tandem::engine
