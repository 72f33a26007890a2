// PrefixIndex: which leading blocks of prompts a decode worker likely holds in its prefix cache, as
// chained hashes of full blocks of `block_size` tokens. Workers keep one over the prompts they admit
// and publish what they add (heartbeats); frontends mirror it per worker and count a prompt's overlap
// (DESIGN.md §2: the prefix hit is counted on the chosen decode worker). An estimate: a block evicted
// on the worker may still be listed here until the index is reset.
// Thread-safety: none; one owner.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_set>
#include <vector>

namespace tandem {

class PrefixIndex {
 public:
  explicit PrefixIndex(int block_size, size_t max_blocks = 1 << 18) : block_size_(block_size), max_blocks_(max_blocks) {}
  int block_size() const { return block_size_; }
  // Leading prompt tokens (whole blocks) found.
  int overlap(std::span<const int32_t> prompt) const;
  // Adds the prompt's full blocks; the hashes not there before go to `added` when given. Bounded
  // memory: when full it forgets everything first and returns true (a reset the mirrors must copy).
  bool insert(std::span<const int32_t> prompt, std::vector<uint64_t>* added = nullptr);
  // A mirror's side: hashes published by the owner.
  void insert_hashes(std::span<const uint64_t> hashes);
  void clear() { blocks_.clear(); }
  std::vector<uint64_t> hashes() const { return {blocks_.begin(), blocks_.end()}; }
  size_t size() const { return blocks_.size(); }

 private:
  int block_size_;
  size_t max_blocks_;
  std::unordered_set<uint64_t> blocks_;
};

}  // namespace tandem
