// The step's constrained-row masks on a thread beside the forward pass (see step_masks.h).
#include "engine/step_masks.h"

#include <algorithm>

namespace tandem::engine {

StepMasks::StepMasks(int vocab_size, std::vector<int> eos_token_ids)
    : vocab_size_(vocab_size), num_words_((vocab_size + 31) / 32), eos_token_ids_(std::move(eos_token_ids)) {}

StepMasks::~StepMasks() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StepMasks::begin(std::vector<Row> rows, int num_sampled_rows) {
  rows_ = std::move(rows);
  slot_of_row_.assign(num_sampled_rows, -1);
  for (size_t i = 0; i < rows_.size(); ++i) slot_of_row_[rows_[i].row] = static_cast<int>(i);
  if (rows_.empty()) return;
  words_.resize(rows_.size() * num_words_);
  only_end_.assign(rows_.size(), 0);
  if (!thread_.joinable()) thread_ = std::thread([this] { thread_main(); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();
}

void StepMasks::wait() {
  if (rows_.empty()) return;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !pending_; });
}

std::span<const uint32_t> StepMasks::mask(int row) const {
  if (row < 0 || row >= static_cast<int>(slot_of_row_.size()) || slot_of_row_[row] < 0) return {};
  return {words_.data() + static_cast<size_t>(slot_of_row_[row]) * num_words_, static_cast<size_t>(num_words_)};
}

bool StepMasks::only_end(int row) const {
  if (row < 0 || row >= static_cast<int>(slot_of_row_.size()) || slot_of_row_[row] < 0) return false;
  return only_end_[slot_of_row_[row]] != 0;
}

void StepMasks::compute() {
  for (size_t i = 0; i < rows_.size(); ++i) {
    const Row& r = rows_[i];
    std::span<uint32_t> words(words_.data() + i * num_words_, num_words_);
    const bool can_end = r.constraint->fill_allowed(std::max(1, r.remaining_tokens), words);
    const bool any = std::any_of(words.begin(), words.end(), [](uint32_t w) { return w != 0; });
    // A state with no token left (a vocabulary lacking a byte the grammar needs) ends rather than
    // letting the model write outside the grammar.
    only_end_[i] = !any;
    if ((can_end && (!r.min_tokens_pending || !any)) || !any) {
      for (int id : eos_token_ids_) {
        if (id >= 0 && id < vocab_size_) words[id >> 5] |= 1u << (id & 31);
      }
    }
  }
}

void StepMasks::thread_main() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || pending_; });
    if (stop_) return;
    lock.unlock();
    compute();
    lock.lock();
    pending_ = false;
    cv_.notify_all();
  }
}

}  // namespace tandem::engine
