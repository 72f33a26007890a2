// The allowed-token masks of one engine step's constrained rows (engine/constraint.h), computed on a
// thread of their own while the engine thread runs the step's forward pass: a mask depends only on the
// sequence's constraint state after its previous token, which is known before the forward starts, so
// the masks cost the step no time unless they take longer than the forward itself.
//
// Thread-safety: begin() and wait() are called by the engine thread, in that order, once per step; the
// constraints handed to begin() must not be touched by anyone else until wait() returns.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "engine/constraint.h"

namespace tandem::engine {

class StepMasks {
 public:
  struct Row {
    int row = 0;                              // the step's sampled-row index
    const TokenConstraint* constraint = nullptr;
    int remaining_tokens = 1;                 // tokens the sequence may still generate, this one included
    bool min_tokens_pending = false;          // min_tokens not reached: EOS stays masked unless it is all that is left
  };

  StepMasks(int vocab_size, std::vector<int> eos_token_ids);
  ~StepMasks();
  StepMasks(const StepMasks&) = delete;
  StepMasks& operator=(const StepMasks&) = delete;

  // Starts computing the rows' masks in the background (nothing to do for no rows).
  void begin(std::vector<Row> rows, int num_sampled_rows);
  // Waits for the masks begun last. Afterwards, until the next begin():
  void wait();
  // sampled row r's mask ([ceil(vocab / 32)] words, EOS included where allowed); empty when unconstrained.
  std::span<const uint32_t> mask(int row) const;
  // Whether row r's constraint allows nothing but ending.
  bool only_end(int row) const;
  // Right after begin(): row r's index among the masks (-1: unconstrained), and every mask back to
  // back ([rows, ceil(vocab / 32)] words; complete only after wait()), for a draw on the device.
  int slot(int row) const { return row >= 0 && row < static_cast<int>(slot_of_row_.size()) ? slot_of_row_[row] : -1; }
  std::span<const uint32_t> all_masks() const { return rows_.empty() ? std::span<const uint32_t>{} : std::span<const uint32_t>(words_); }

 private:
  void compute();
  void thread_main();

  const int vocab_size_;
  const int num_words_;
  const std::vector<int> eos_token_ids_;
  std::vector<Row> rows_;
  std::vector<int> slot_of_row_;     // [sampled rows] index into rows_, -1 = unconstrained
  std::vector<uint32_t> words_;      // [rows_, num_words_] the masks
  std::vector<uint8_t> only_end_;    // [rows_]

  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;  // GUARDED_BY(mu_) begun, not yet computed
  bool stop_ = false;     // GUARDED_BY(mu_)
  std::thread thread_;    // started on the first begin() with rows
};

}  // namespace tandem::engine
