#include "engine/model_runner.h"

#include <algorithm>

namespace tandem::engine {

ModelRunner::ModelRunner(backend::Backend* backend)
    : backend_(backend), vocab_size_(backend->config().vocab_size), block_size_(backend->kv_cache_spec().block_size) {}

void ModelRunner::prepare(const SchedulerOutput& step) {
  token_ids_.clear();
  positions_.clear();
  query_starts_.clear();
  context_lens_.clear();
  logits_indices_.clear();
  max_blocks_per_seq_ = 1;
  for (const ScheduledSeq& s : step.seqs) {
    const int context = s.seq->num_computed_tokens + s.num_new_tokens;
    max_blocks_per_seq_ = std::max(max_blocks_per_seq_, (context + block_size_ - 1) / block_size_);
  }
  block_tables_.assign(step.seqs.size() * static_cast<size_t>(max_blocks_per_seq_), -1);
  query_starts_.push_back(0);
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const ScheduledSeq& s = step.seqs[i];
    const Sequence& seq = *s.seq;
    const int begin = seq.num_computed_tokens, end = begin + s.num_new_tokens;
    token_ids_.insert(token_ids_.end(), seq.token_ids.begin() + begin, seq.token_ids.begin() + end);
    for (int p = begin; p < end; ++p) positions_.push_back(p);
    query_starts_.push_back(static_cast<int32_t>(token_ids_.size()));
    context_lens_.push_back(end);
    const int used_blocks = (end + block_size_ - 1) / block_size_;
    std::copy(seq.block_table.begin(), seq.block_table.begin() + used_blocks,
              block_tables_.begin() + static_cast<ptrdiff_t>(i * max_blocks_per_seq_));
    if (s.needs_sample) logits_indices_.push_back(static_cast<int32_t>(token_ids_.size()) - 1);
  }
}

backend::ForwardBatch ModelRunner::batch() const {
  return backend::ForwardBatch{token_ids_, positions_, query_starts_, context_lens_, block_tables_,
                               max_blocks_per_seq_, logits_indices_};
}

Status ModelRunner::execute() {
  // Only the host sampler's steps need whole rows (256 of Qwen3's are 155 MB): grown here, not in
  // prepare(), so that a worker whose steps are all drawn on the device never allocates, zeroes and
  // copies them as its batch grows (issue 23: the growth was most of a CPU worker's first seconds).
  const size_t logits_size = logits_indices_.size() * static_cast<size_t>(vocab_size_);
  if (logits_.size() < logits_size) logits_.resize(logits_size);
  return backend_->forward(batch(), std::span<float>(logits_.data(), logits_size));
}

Status ModelRunner::execute_greedy() {
  // The backend picks the tokens where the logits live: a GPU returns 4 bytes per row, not a row.
  greedy_tokens_.resize(logits_indices_.size());
  return backend_->forward_greedy(batch(), greedy_tokens_);
}

Status ModelRunner::execute_sampled(std::span<const backend::RowSampling> rows, std::span<const backend::LogitEdit> edits,
                                    std::span<const uint32_t> masks, std::function<void()> await_masks) {
  greedy_tokens_.resize(logits_indices_.size());
  backend::DeviceSamplingStep step;
  step.rows = rows;
  step.edits = edits;
  step.masks = masks;
  step.await_masks = std::move(await_masks);
  step.tokens = greedy_tokens_;
  bool any_logprobs = false;
  for (const backend::RowSampling& r : rows) any_logprobs = any_logprobs || r.num_logprobs >= 0;
  if (any_logprobs) {
    logprobs_.resize(logits_indices_.size());
    step.logprobs = logprobs_;
  }
  return backend_->forward_sampled(batch(), step);
}

}  // namespace tandem::engine
