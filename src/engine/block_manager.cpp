#include "engine/block_manager.h"

#include <algorithm>
#include <cstring>

#include "common/block_hash.h"
#include "common/error.h"

namespace tandem::engine {
BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching, uint64_t salt)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      enable_prefix_caching_(enable_prefix_caching),
      salt_(salt),
      ref_count_(num_blocks, 0),
      hash_(num_blocks, kNoHash),
      parent_hash_(num_blocks, kNoHash),
      tokens_(static_cast<size_t>(num_blocks) * block_size, -1),
      prev_(num_blocks + 1),
      next_(num_blocks + 1),
      in_free_(num_blocks, false) {
  TANDEM_CHECK(num_blocks > 0 && block_size > 0);
  prev_[num_blocks_] = next_[num_blocks_] = num_blocks_;  // empty queue: sentinel points at itself
  for (int32_t b = 0; b < num_blocks_; ++b) push_free_tail(b);
  cached_.reserve(static_cast<size_t>(num_blocks));
}

uint64_t BlockManager::chain_hash(uint64_t parent, std::span<const int32_t> tokens) const {
  return chain_block_hash(parent, tokens);
}

void BlockManager::update_block_hashes(Sequence& seq) const {
  const size_t full = static_cast<size_t>(seq.num_tokens() / block_size_);
  while (seq.block_hashes.size() < full) {
    const size_t i = seq.block_hashes.size();
    const uint64_t parent = i == 0 ? salt_ : seq.block_hashes[i - 1];
    seq.block_hashes.push_back(
        chain_hash(parent, {seq.token_ids.data() + i * block_size_, static_cast<size_t>(block_size_)}));
  }
}

void BlockManager::find_cached_prefix(const Sequence& seq, int max_blocks, std::vector<int32_t>* out) const {
  if (!enable_prefix_caching_) return;
  const int limit = std::min<int>(max_blocks, static_cast<int>(seq.block_hashes.size()));
  for (int i = 0; i < limit; ++i) {
    auto it = cached_.find(seq.block_hashes[i]);
    if (it == cached_.end()) return;
    const int32_t block = it->second;
    // A 64-bit hash can collide; the stored parent and tokens make a hit exact.
    const uint64_t parent = i == 0 ? salt_ : seq.block_hashes[i - 1];
    if (parent_hash_[block] != parent ||
        std::memcmp(&tokens_[static_cast<size_t>(block) * block_size_], seq.token_ids.data() + static_cast<size_t>(i) * block_size_,
                    sizeof(int32_t) * block_size_) != 0) {
      return;
    }
    out->push_back(block);
  }
}

int BlockManager::blocks_needed(const Sequence& seq, std::span<const int32_t> cached, int num_tokens) const {
  const int have = static_cast<int>(seq.block_table.size() + cached.size());
  int needed = std::max(0, blocks_for_tokens(num_tokens) - have);
  for (int32_t b : cached) needed += ref_count_[b] == 0 ? 1 : 0;
  return needed;
}

bool BlockManager::allocate(Sequence& seq, std::span<const int32_t> cached, int num_tokens) {
  TANDEM_CHECK(cached.empty() || seq.block_table.empty());
  if (blocks_needed(seq, cached, num_tokens) > num_free_) return false;
  for (int32_t b : cached) reference(b);
  seq.block_table.insert(seq.block_table.end(), cached.begin(), cached.end());
  if (!cached.empty()) seq.num_published_blocks = static_cast<int>(cached.size());
  const int target = blocks_for_tokens(num_tokens);
  while (static_cast<int>(seq.block_table.size()) < target) {
    const int32_t b = pop_free_head();
    ref_count_[b] = 1;
    seq.block_table.push_back(b);
  }
  return true;
}

bool BlockManager::allocate_table(std::vector<int32_t>& table, std::span<const int32_t> cached, int num_tokens) {
  TANDEM_CHECK(table.empty());
  int needed = std::max(0, blocks_for_tokens(num_tokens) - static_cast<int>(cached.size()));
  for (int32_t b : cached) needed += ref_count_[b] == 0 ? 1 : 0;
  if (needed > num_free_) return false;
  for (int32_t b : cached) reference(b);
  table.assign(cached.begin(), cached.end());
  while (static_cast<int>(table.size()) < blocks_for_tokens(num_tokens)) {
    const int32_t b = pop_free_head();
    ref_count_[b] = 1;
    table.push_back(b);
  }
  return true;
}

void BlockManager::free(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    const int32_t b = *it;
    TANDEM_CHECK(ref_count_[b] > 0);  // a double free is our bug, never the user's
    if (--ref_count_[b] == 0) push_free_tail(b);
  }
  table.clear();
}

void BlockManager::share(std::span<const int32_t> table) {
  for (int32_t b : table) reference(b);
}

void BlockManager::publish_computed_blocks(Sequence& seq) {
  const int full = std::min({seq.num_computed_tokens / block_size_, static_cast<int>(seq.block_table.size())});
  if (!enable_prefix_caching_) {
    seq.num_published_blocks = std::max(seq.num_published_blocks, full);
    return;
  }
  if (full <= seq.num_published_blocks) return;
  update_block_hashes(seq);
  for (int i = seq.num_published_blocks; i < full; ++i) {
    const int32_t b = seq.block_table[i];
    if (hash_[b] != kNoHash) continue;  // came from the cache, or already published by a sibling
    const uint64_t h = seq.block_hashes[i];
    if (cached_.count(h) != 0) continue;  // the same prefix was computed twice; keep the first copy
    hash_[b] = h;
    parent_hash_[b] = i == 0 ? salt_ : seq.block_hashes[i - 1];
    std::memcpy(&tokens_[static_cast<size_t>(b) * block_size_], seq.token_ids.data() + static_cast<size_t>(i) * block_size_,
                sizeof(int32_t) * block_size_);
    cached_.emplace(h, b);
    if (record_events_) events_.push_back({h, true});
  }
  seq.num_published_blocks = full;
}

void BlockManager::take_events(std::vector<uint64_t>* stored, std::vector<uint64_t>* removed) {
  if (events_.empty()) return;
  // A hash stored and evicted within one batch (or the reverse) nets out to its last change.
  std::unordered_map<uint64_t, bool> last;
  last.reserve(events_.size());
  for (const auto& [h, is_stored] : events_) last[h] = is_stored;
  for (const auto& [h, is_stored] : events_) {
    auto it = last.find(h);
    if (it == last.end()) continue;
    (it->second ? stored : removed)->push_back(h);
    last.erase(it);
  }
  events_.clear();
}

std::vector<uint64_t> BlockManager::cached_hashes() const {
  std::vector<uint64_t> out;
  out.reserve(cached_.size());
  for (const auto& [h, b] : cached_) out.push_back(h);
  return out;
}

BlockManagerStats BlockManager::stats() const {
  BlockManagerStats s;
  s.num_blocks = num_blocks_;
  s.num_free = num_free_;
  s.num_used = num_blocks_ - num_free_;
  s.num_cached = num_cached_free_;
  s.prefix_queries = prefix_queries_;
  s.prefix_hits = prefix_hits_;
  return s;
}

void BlockManager::reference(int32_t b) {
  if (ref_count_[b]++ == 0) {
    unlink_free(b);
  }
}

void BlockManager::push_free_tail(int32_t b) {
  const int32_t sentinel = num_blocks_;
  const int32_t last = prev_[sentinel];
  next_[last] = b;
  prev_[b] = last;
  next_[b] = sentinel;
  prev_[sentinel] = b;
  in_free_[b] = true;
  ++num_free_;
  if (hash_[b] != kNoHash) ++num_cached_free_;
}

void BlockManager::unlink_free(int32_t b) {
  TANDEM_CHECK(in_free_[b]);
  next_[prev_[b]] = next_[b];
  prev_[next_[b]] = prev_[b];
  in_free_[b] = false;
  --num_free_;
  if (hash_[b] != kNoHash) --num_cached_free_;
}

int32_t BlockManager::pop_free_head() {
  const int32_t b = next_[num_blocks_];
  TANDEM_CHECK(b != num_blocks_);
  unlink_free(b);
  evict(b);
  return b;
}

void BlockManager::evict(int32_t b) {
  if (hash_[b] == kNoHash) return;
  auto it = cached_.find(hash_[b]);
  if (it != cached_.end() && it->second == b) {
    cached_.erase(it);
    if (record_events_) events_.push_back({hash_[b], false});
  }
  hash_[b] = kNoHash;
}

bool BlockManager::check_invariants() const {
  int count = 0, cached_free = 0;
  std::vector<bool> seen(num_blocks_, false);
  for (int32_t b = next_[num_blocks_]; b != num_blocks_; b = next_[b]) {
    if (b < 0 || b >= num_blocks_ || seen[b] || ref_count_[b] != 0 || !in_free_[b]) return false;
    if (prev_[next_[b]] != b) return false;
    seen[b] = true;
    ++count;
    if (hash_[b] != kNoHash) ++cached_free;
  }
  if (count != num_free_ || cached_free != num_cached_free_) return false;
  for (int32_t b = 0; b < num_blocks_; ++b) {
    if (ref_count_[b] < 0) return false;
    if ((ref_count_[b] == 0) != seen[b]) return false;
  }
  for (const auto& [h, b] : cached_) {
    if (b < 0 || b >= num_blocks_ || hash_[b] != h) return false;
  }
  return true;
}

}  // namespace tandem::engine
