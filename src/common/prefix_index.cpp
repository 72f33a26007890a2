// Chained block hashes of prompts (see prefix_index.h).
#include "common/prefix_index.h"

namespace tandem {
namespace {
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdull;
}
}  // namespace

int PrefixIndex::overlap(std::span<const int32_t> prompt) const {
  uint64_t h = 0;
  int found = 0;
  for (size_t end = block_size_; end <= prompt.size(); end += block_size_) {
    for (size_t i = end - block_size_; i < end; ++i) h = mix(h, static_cast<uint64_t>(prompt[i]));
    if (!blocks_.count(h)) break;
    found += block_size_;
  }
  return found;
}

bool PrefixIndex::insert(std::span<const int32_t> prompt, std::vector<uint64_t>* added) {
  bool reset = false;
  if (blocks_.size() + prompt.size() / block_size_ > max_blocks_) {
    blocks_.clear();
    reset = true;
  }
  uint64_t h = 0;
  for (size_t end = block_size_; end <= prompt.size(); end += block_size_) {
    for (size_t i = end - block_size_; i < end; ++i) h = mix(h, static_cast<uint64_t>(prompt[i]));
    if (blocks_.insert(h).second && added) added->push_back(h);
  }
  return reset;
}

void PrefixIndex::insert_hashes(std::span<const uint64_t> hashes) {
  if (blocks_.size() + hashes.size() > max_blocks_) blocks_.clear();
  blocks_.insert(hashes.begin(), hashes.end());
}

}  // namespace tandem
