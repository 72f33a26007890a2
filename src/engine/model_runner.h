// ModelRunner: turns one scheduler step into the backend's ForwardBatch (flat host arrays, sized once
// and reused, so a step allocates nothing once warm) and runs it. It reads sequences and block tables;
// it never edits them (nano-vllm's split: the scheduler decides, the runner executes).
//
// Ownership: borrows the Backend (which must outlive it). Thread-safety: none (the engine loop).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "engine/scheduler.h"

namespace tandem::engine {

class ModelRunner {
 public:
  explicit ModelRunner(backend::Backend* backend);

  // Builds the batch for `step` (read from the sequences now) into the runner's buffers.
  void prepare(const SchedulerOutput& step);
  // Runs the prepared batch. On OK, logits_row(r) holds the logits of the r-th scheduled sequence
  // whose needs_sample is true, in schedule order.
  Status execute();

  // Runs the prepared batch for a step whose every sampled row is plain greedy
  // (Sampler::is_plain_greedy): on OK, greedy_token(r) is the argmax of row r (ties to the lowest id).
  // Backend::forward_greedy, once the backend interface has it, lets a GPU return 4 bytes per row here
  // instead of the whole row; until then the rows come back and the argmax is taken on the host.
  Status execute_greedy();
  int32_t greedy_token(int r) const { return greedy_tokens_[r]; }
  // Runs the prepared batch with row r edited and drawn by rows[r] on the backend's device
  // (Backend::forward_sampled); on OK, sampled_token(r) is its token and, when rows[r] asked,
  // sampled_logprobs(r) its logprobs.
  // `masks` and `await_masks` as backend::DeviceSamplingStep's (constrained rows; may be empty).
  Status execute_sampled(std::span<const backend::RowSampling> rows, std::span<const backend::LogitEdit> edits,
                         std::span<const uint32_t> masks = {}, std::function<void()> await_masks = nullptr);
  int32_t sampled_token(int r) const { return greedy_tokens_[r]; }
  const backend::RowLogprobs& sampled_logprobs(int r) const { return logprobs_[r]; }

  std::span<const float> logits_row(int r) const {
    return {logits_.data() + static_cast<size_t>(r) * vocab_size_, static_cast<size_t>(vocab_size_)};
  }
  backend::ForwardBatch batch() const;

 private:
  backend::Backend* backend_;
  int vocab_size_;
  int block_size_;
  std::vector<int32_t> token_ids_;       // [num_tokens]
  std::vector<int32_t> positions_;       // [num_tokens]
  std::vector<int32_t> query_starts_;    // [num_seqs + 1]
  std::vector<int32_t> context_lens_;    // [num_seqs]
  std::vector<int32_t> block_tables_;    // [num_seqs, max_blocks_per_seq], -1 padded
  std::vector<int32_t> logits_indices_;  // [num_logits]
  int max_blocks_per_seq_ = 0;
  std::vector<float> logits_;            // [num_logits, vocab] fp32, host; capacity kept between steps
  std::vector<int32_t> greedy_tokens_;   // [num_logits] argmax (execute_greedy) or draw (execute_sampled) of each row
  std::vector<backend::RowLogprobs> logprobs_;  // [num_logits] execute_sampled, when a row asks
};

}  // namespace tandem::engine
