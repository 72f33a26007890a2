// BlockManager: the paged KV cache's bookkeeping on the host — which fixed-size blocks are free, which
// are referenced by which sequences (reference counts), and the prefix cache: a full block whose KV has
// been written is published under a chained hash (its tokens, every token before it, and a salt naming
// the model), so a later sequence with the same prefix references it instead of recomputing it.
// Unreferenced blocks sit in one LRU free queue; a cached one keeps its contents until it is the least
// recently freed block and an allocation takes it (eviction). Block ids are the backend's pool indices
// and what the transfer layer addresses.
//
// Every change is planned first and applied only if the whole plan fits: a failed allocate() leaves
// nothing half-done (llama.cpp's rule).
//
// Ownership: owns only integers; never touches device memory. Thread-safety: none (the engine loop owns
// it, under the engine's mutex).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/sequence.h"

namespace tandem::engine {

struct BlockManagerStats {
  int num_blocks = 0;
  int num_used = 0;    // referenced by at least one sequence or reservation
  int num_free = 0;    // unreferenced (num_cached of them still hold reusable prefixes)
  int num_cached = 0;  // unreferenced and published in the prefix cache: evictable
  int64_t prefix_queries = 0;  // prompt tokens looked up at admission
  int64_t prefix_hits = 0;     // of which found in the cache
};

class BlockManager {
 public:
  // `salt` keys every chain (the model): two managers with different salts never share a hash.
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching, uint64_t salt);
  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int num_free_blocks() const { return num_free_; }
  bool prefix_caching() const { return enable_prefix_caching_; }
  int blocks_for_tokens(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Extends seq.block_hashes to cover every full block of seq.token_ids.
  void update_block_hashes(Sequence& seq) const;

  // Appends to `out` the cached blocks holding the longest run of leading full blocks of `seq`, at most
  // `max_blocks`. The blocks are not referenced yet: pass them to allocate() before anything else
  // changes the manager. REQUIRES: update_block_hashes(seq) was called since its tokens last changed.
  void find_cached_prefix(const Sequence& seq, int max_blocks, std::vector<int32_t>* out) const;

  // Makes seq.block_table cover `num_tokens` tokens: first appends `cached` (blocks from
  // find_cached_prefix, referenced now; only when the table is empty), then fresh blocks from the free
  // queue (evicting their cached contents). Returns false, changing nothing, if the pool is short.
  bool allocate(Sequence& seq, std::span<const int32_t> cached, int num_tokens);
  // How many more blocks allocate(seq, cached, num_tokens) would take from the free queue, counting
  // cached blocks that are unreferenced now (they leave the free queue too).
  int blocks_needed(const Sequence& seq, std::span<const int32_t> cached, int num_tokens) const;

  // Fresh blocks for a caller that is not a sequence (a KV reservation), after `cached` prefix blocks:
  // `table` ends up with blocks_for_tokens(num_tokens) ids. False, changing nothing, if the pool is short.
  bool allocate_table(std::vector<int32_t>& table, std::span<const int32_t> cached, int num_tokens);

  // Drops one reference to each block of `table`, last block first (so a sequence's tail is evicted
  // before its head, which other prompts are likelier to share), and clears it.
  void free(std::vector<int32_t>& table);
  // Adds one reference to each block of `table` (a fork sharing a parent's full blocks).
  void share(std::span<const int32_t> table);

  // Publishes the full blocks of seq whose KV is now written (those below num_computed_tokens) to the
  // prefix cache. A block whose hash is already cached under another id stays private.
  void publish_computed_blocks(Sequence& seq);

  void record_prefix_lookup(int num_queried_tokens, int num_hit_tokens) {
    prefix_queries_ += num_queried_tokens;
    prefix_hits_ += num_hit_tokens;
  }

  // KV events (the frontend's KV index, docs/routing.md): once enabled, every hash published to or
  // evicted from the prefix cache is logged until take_events() hands the net change since the last
  // call to `stored` and `removed` (disjoint; appended).
  void enable_events() { record_events_ = enable_prefix_caching_; }
  void take_events(std::vector<uint64_t>* stored, std::vector<uint64_t>* removed);
  // Every hash the prefix cache holds now (a KV index's resynchronisation), in no order.
  std::vector<uint64_t> cached_hashes() const;
  uint64_t salt() const { return salt_; }

  BlockManagerStats stats() const;
  int ref_count(int32_t block) const { return ref_count_[block]; }
  // Walks every structure and returns false on the first broken invariant (tests and debug builds):
  // the free queue holds exactly the unreferenced blocks, once each; the hash index points at blocks
  // that carry that hash.
  bool check_invariants() const;

 private:
  static constexpr uint64_t kNoHash = 0;
  uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens) const;
  void push_free_tail(int32_t block);
  void unlink_free(int32_t block);
  int32_t pop_free_head();
  void evict(int32_t block);
  void reference(int32_t block);

  const int num_blocks_;
  const int block_size_;
  const bool enable_prefix_caching_;
  const uint64_t salt_;

  std::vector<int32_t> ref_count_;     // [num_blocks]
  std::vector<uint64_t> hash_;         // [num_blocks] published chain hash, kNoHash when not cached
  std::vector<uint64_t> parent_hash_;  // [num_blocks] hash of the block before it (salt for the first)
  std::vector<int32_t> tokens_;        // [num_blocks, block_size] published tokens, to verify a hit
  // Free queue: doubly linked over block ids, index num_blocks_ is the sentinel. Head = least recently
  // freed (taken first), tail = most recently freed.
  std::vector<int32_t> prev_, next_;   // [num_blocks + 1]
  std::vector<bool> in_free_;          // [num_blocks]
  int num_free_ = 0;
  int num_cached_free_ = 0;
  std::unordered_map<uint64_t, int32_t> cached_;  // chain hash -> block id

  bool record_events_ = false;
  std::vector<std::pair<uint64_t, bool>> events_;  // (hash, stored) in order, since take_events()

  int64_t prefix_queries_ = 0;
  int64_t prefix_hits_ = 0;
};

}  // namespace tandem::engine
