#include "engine/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace tandem::engine {

Scheduler::Scheduler(const SchedulerConfig& config, BlockManager* block_manager)
    : config_(config), blocks_(block_manager) {
  TANDEM_CHECK(config.max_batch_tokens > 0 && config.max_seqs > 0);
  running_.reserve(config.max_seqs);
  output_.seqs.reserve(config.max_seqs);
}

void Scheduler::add_waiting(Sequence* seq, int seats) {
  TANDEM_CHECK(seq->block_table.empty() && seats >= 1 && seats <= config_.max_seqs);
  seq->status = SequenceStatus::kWaiting;
  seq->num_seats = seats;
  seq->num_computed_tokens = 0;
  waiting_.push_back(seq);
}

void Scheduler::add_running(Sequence* seq) {
  TANDEM_CHECK(blocks_->blocks_for_tokens(seq->num_computed_tokens) <= static_cast<int>(seq->block_table.size()));
  seq->status = SequenceStatus::kRunning;
  seq->num_seats = 1;
  running_.push_back(seq);
}

void Scheduler::fork(Sequence* parent, Sequence* child) {
  TANDEM_CHECK(parent->status == SequenceStatus::kRunning && parent->num_seats > 1 && child->block_table.empty());
  const int shared = parent->num_computed_tokens / blocks_->block_size();
  child->block_table.assign(parent->block_table.begin(), parent->block_table.begin() + shared);
  blocks_->share(child->block_table);
  child->num_computed_tokens = shared * blocks_->block_size();
  child->num_cached_prompt_tokens = parent->num_cached_prompt_tokens;
  child->num_published_blocks = std::min(parent->num_published_blocks, shared);
  child->block_hashes.assign(parent->block_hashes.begin(),
                             parent->block_hashes.begin() + std::min<size_t>(shared, parent->block_hashes.size()));
  child->status = SequenceStatus::kRunning;
  child->num_seats = 1;
  --parent->num_seats;
  --reserved_seats_;
  running_.push_back(child);
}

void Scheduler::preempt_at(size_t index) {
  Sequence* victim = running_[index];
  running_.erase(running_.begin() + static_cast<ptrdiff_t>(index));
  reserved_seats_ -= victim->num_seats - 1;
  blocks_->free(victim->block_table);
  victim->num_computed_tokens = 0;
  victim->num_published_blocks = 0;
  victim->status = SequenceStatus::kWaiting;
  victim->preempted = true;
  waiting_.push_front(victim);
  output_.preempted.push_back(victim);
  ++num_preemptions_;
}

const SchedulerOutput& Scheduler::schedule() {
  output_.seqs.clear();
  output_.preempted.clear();
  ++step_;
  int budget = config_.max_batch_tokens;

  // Running sequences, oldest first: pass 0 takes the decodes (one token left to compute), pass 1 the
  // ones with more (an unfinished prefill, a fork catching up on its partial block), so a long prefill
  // never holds back the decodes beside it. A sequence that needs a block when none is free takes it
  // from the newest running sequence not scheduled in this step; when there is none, the sequence
  // gives way itself if it is the newest, and otherwise waits for the next step (the newer sequences
  // are all scheduled, so they make progress and free blocks).
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < running_.size() && budget > 0 && static_cast<int>(output_.seqs.size()) < config_.max_seqs;
         ++i) {
      Sequence* seq = running_[i];
      const int remaining = seq->num_tokens() - seq->num_computed_tokens;
      if (seq->scheduled_step == step_ || remaining <= 0 || (remaining == 1) != (pass == 0)) continue;
      const int num_new = std::min(remaining, budget);
      bool allocated = blocks_->allocate(*seq, {}, seq->num_computed_tokens + num_new);
      while (!allocated) {
        size_t victim = running_.size() - 1;  // newest first, and only sequences newer than seq
        while (victim > i && running_[victim]->scheduled_step == step_) --victim;
        if (victim == i) break;
        preempt_at(victim);
        allocated = blocks_->allocate(*seq, {}, seq->num_computed_tokens + num_new);
      }
      if (!allocated) {
        if (i + 1 == running_.size()) {
          preempt_at(i);  // the newest: it waits for blocks
          break;
        }
        continue;
      }
      seq->scheduled_step = step_;
      output_.seqs.push_back({seq, num_new, seq->num_computed_tokens + num_new == seq->num_tokens()});
      budget -= num_new;
    }
  }

  // Waiting sequences in order, while nothing had to be preempted this step (admitting now would only
  // evict again) and there is budget, a seat and blocks.
  while (output_.preempted.empty() && !waiting_.empty() && budget > 0 &&
         static_cast<int>(output_.seqs.size()) < config_.max_seqs) {
    Sequence* seq = waiting_.front();
    if (static_cast<int>(running_.size()) + reserved_seats_ + seq->num_seats > config_.max_seqs) break;
    cached_blocks_.clear();
    int num_cached_tokens = 0;
    if (blocks_->prefix_caching()) {
      blocks_->update_block_hashes(*seq);
      // At least the last token is computed, so the step yields logits to sample from.
      blocks_->find_cached_prefix(*seq, (seq->num_tokens() - 1) / blocks_->block_size(), &cached_blocks_);
      num_cached_tokens = static_cast<int>(cached_blocks_.size()) * blocks_->block_size();
    }
    const int num_new = std::min(seq->num_tokens() - num_cached_tokens, budget);
    if (!blocks_->allocate(*seq, cached_blocks_, num_cached_tokens + num_new)) break;
    blocks_->record_prefix_lookup(seq->num_tokens(), num_cached_tokens);
    waiting_.pop_front();
    seq->num_computed_tokens = num_cached_tokens;
    seq->num_cached_prompt_tokens = std::min(num_cached_tokens, seq->num_prompt_tokens);
    seq->status = SequenceStatus::kRunning;
    reserved_seats_ += seq->num_seats - 1;
    running_.push_back(seq);
    output_.seqs.push_back({seq, num_new, num_cached_tokens + num_new == seq->num_tokens()});
    budget -= num_new;
  }
  output_.num_batched_tokens = config_.max_batch_tokens - budget;
  return output_;
}

void Scheduler::complete_step() {
  for (const ScheduledSeq& s : output_.seqs) {
    if (s.seq->status != SequenceStatus::kRunning) continue;
    s.seq->num_computed_tokens += s.num_new_tokens;
    blocks_->publish_computed_blocks(*s.seq);
  }
}

void Scheduler::remove(Sequence* seq) {
  if (seq->status == SequenceStatus::kRunning) {
    auto it = std::find(running_.begin(), running_.end(), seq);
    TANDEM_CHECK(it != running_.end());
    running_.erase(it);
    reserved_seats_ -= seq->num_seats - 1;
  } else if (seq->status == SequenceStatus::kWaiting) {
    auto it = std::find(waiting_.begin(), waiting_.end(), seq);
    if (it != waiting_.end()) waiting_.erase(it);  // absent when it was never added
  }
  seq->num_seats = 1;
  seq->status = SequenceStatus::kFinished;
}

void Scheduler::finish(Sequence* seq) {
  if (seq->status == SequenceStatus::kFinished) return;
  remove(seq);
  blocks_->free(seq->block_table);
}

std::vector<int32_t> Scheduler::finish_keep_blocks(Sequence* seq) {
  if (seq->status == SequenceStatus::kFinished) return {};
  remove(seq);
  std::vector<int32_t> table;
  table.swap(seq->block_table);
  return table;
}

}  // namespace tandem::engine
