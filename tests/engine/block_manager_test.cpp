// BlockManager: reference counts, plan-then-apply allocation, prefix caching by chained hashes, LRU
// eviction and the counters.
#include "engine/block_manager.h"

#include <gtest/gtest.h>

#include <numeric>

namespace tandem::engine {
namespace {

Sequence make_seq(std::vector<int32_t> tokens) {
  Sequence s;
  s.token_ids = std::move(tokens);
  s.num_prompt_tokens = s.num_tokens();
  return s;
}

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Allocates seq's whole prompt, "computes" it and publishes its full blocks, as the scheduler would.
void run_prompt(BlockManager& bm, Sequence& seq) {
  std::vector<int32_t> cached;
  bm.update_block_hashes(seq);
  bm.find_cached_prefix(seq, (seq.num_tokens() - 1) / bm.block_size(), &cached);
  ASSERT_TRUE(bm.allocate(seq, cached, seq.num_tokens()));
  seq.num_computed_tokens = seq.num_tokens();
  bm.publish_computed_blocks(seq);
}

TEST(BlockManager, AllocateAndFreeCountsBlocks) {
  BlockManager bm(8, 4, true, 7);
  Sequence s = make_seq(iota_tokens(10));
  ASSERT_TRUE(bm.allocate(s, {}, 10));
  EXPECT_EQ(s.block_table.size(), 3u);
  EXPECT_EQ(bm.stats().num_used, 3);
  EXPECT_EQ(bm.stats().num_free, 5);
  bm.free(s.block_table);
  EXPECT_TRUE(s.block_table.empty());
  EXPECT_EQ(bm.stats().num_free, 8);
  EXPECT_TRUE(bm.check_invariants());
}

TEST(BlockManager, FailedAllocationChangesNothing) {
  BlockManager bm(4, 4, true, 7);
  Sequence a = make_seq(iota_tokens(9));
  run_prompt(bm, a);  // 3 blocks, 2 of them full and published
  bm.free(a.block_table);
  ASSERT_EQ(bm.stats().num_cached, 2);
  // b shares a's two full blocks but needs 4 more: 2 cached (unreferenced, so they count) + 3 fresh > 4.
  Sequence b = make_seq(iota_tokens(20));
  bm.update_block_hashes(b);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(b, 4, &cached);
  ASSERT_EQ(cached.size(), 2u);
  const BlockManagerStats before = bm.stats();
  EXPECT_FALSE(bm.allocate(b, cached, 20));
  EXPECT_TRUE(b.block_table.empty());
  const BlockManagerStats after = bm.stats();
  EXPECT_EQ(after.num_free, before.num_free);
  EXPECT_EQ(after.num_cached, before.num_cached);
  EXPECT_EQ(bm.ref_count(cached[0]), 0);
  EXPECT_TRUE(bm.check_invariants());
}

TEST(BlockManager, PrefixCache_ReusesFullBlocksOnly) {
  BlockManager bm(16, 4, true, 7);
  Sequence a = make_seq(iota_tokens(10));  // blocks [0..3] [4..7] full, [8, 9] partial
  run_prompt(bm, a);
  Sequence b = make_seq(iota_tokens(11));
  bm.update_block_hashes(b);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(b, 100, &cached);
  ASSERT_EQ(cached.size(), 2u);
  EXPECT_EQ(cached[0], a.block_table[0]);
  EXPECT_EQ(cached[1], a.block_table[1]);
  ASSERT_TRUE(bm.allocate(b, cached, 11));
  EXPECT_EQ(bm.ref_count(a.block_table[0]), 2);
  EXPECT_NE(b.block_table[2], a.block_table[2]);  // the partial block is never shared
}

TEST(BlockManager, PrefixCache_HashCoversEveryEarlierToken) {
  BlockManager bm(16, 4, true, 7);
  Sequence a = make_seq({1, 2, 3, 4, 5, 6, 7, 8, 9});
  run_prompt(bm, a);
  // Same second block, different first block: nothing can be reused.
  Sequence b = make_seq({0, 2, 3, 4, 5, 6, 7, 8, 9});
  bm.update_block_hashes(b);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(b, 100, &cached);
  EXPECT_TRUE(cached.empty());
}

// The case the test above cannot see (its lookup stops at the first miss): a block whose tokens and
// parent block match a cached one, but at another depth. Hashed from the salt instead of from the
// previous block's hash, B of [D, A, B] would be found for [A, B] and its KV (computed at positions
// 8..11) reused at positions 4..7.
TEST(BlockManager, PrefixCache_BlockAtAnotherDepthIsNotReused) {
  BlockManager bm(16, 4, true, 7);
  const std::vector<int32_t> A = {1, 2, 3, 4}, B = {5, 6, 7, 8}, D = {9, 10, 11, 12}, x = {13, 14, 15, 16};
  auto concat = [](std::initializer_list<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    out.push_back(99);  // a partial last block, so every full block may be looked up
    return out;
  };
  Sequence first = make_seq(concat({A, x}));
  run_prompt(bm, first);
  Sequence second = make_seq(concat({D, A, B}));
  run_prompt(bm, second);
  Sequence query = make_seq(concat({A, B}));
  bm.update_block_hashes(query);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(query, 100, &cached);
  EXPECT_EQ(cached, std::vector<int32_t>{first.block_table[0]}) << "only [A] is a true shared prefix";
  // And the true prefix [D, A, B] is found whole.
  Sequence again = make_seq(concat({D, A, B}));
  bm.update_block_hashes(again);
  cached.clear();
  bm.find_cached_prefix(again, 100, &cached);
  EXPECT_EQ(cached, (std::vector<int32_t>{second.block_table[0], second.block_table[1], second.block_table[2]}));
}

TEST(BlockManager, PrefixCache_SaltSeparatesModels) {
  BlockManager bm1(16, 4, true, 1), bm2(16, 4, true, 2);
  Sequence a = make_seq(iota_tokens(9));
  bm1.update_block_hashes(a);
  Sequence b = make_seq(iota_tokens(9));
  bm2.update_block_hashes(b);
  EXPECT_NE(a.block_hashes[0], b.block_hashes[0]);
}

TEST(BlockManager, PrefixCache_DisabledFindsNothing) {
  BlockManager bm(16, 4, false, 7);
  Sequence a = make_seq(iota_tokens(9));
  run_prompt(bm, a);
  bm.free(a.block_table);
  Sequence b = make_seq(iota_tokens(9));
  bm.update_block_hashes(b);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(b, 100, &cached);
  EXPECT_TRUE(cached.empty());
  EXPECT_EQ(bm.stats().num_cached, 0);
}

TEST(BlockManager, FreedCachedBlocksAreReusedThenEvictedLeastRecentlyFreedFirst) {
  BlockManager bm(4, 2, true, 7);
  Sequence a = make_seq({1, 2, 3});  // one full block
  Sequence b = make_seq({5, 6, 7});
  run_prompt(bm, a);
  run_prompt(bm, b);
  bm.free(a.block_table);  // a's blocks freed first: least recently freed
  bm.free(b.block_table);
  EXPECT_EQ(bm.stats().num_cached, 2);
  // Two fresh blocks come from the head of the queue: a's partial block, then a's full (cached) block.
  Sequence c = make_seq({9, 9, 9});
  ASSERT_TRUE(bm.allocate(c, {}, 3));
  EXPECT_EQ(bm.stats().num_cached, 1);
  Sequence a2 = make_seq({1, 2, 3});
  bm.update_block_hashes(a2);
  std::vector<int32_t> cached;
  bm.find_cached_prefix(a2, 1, &cached);
  EXPECT_TRUE(cached.empty()) << "a's block was the least recently freed and must have been evicted";
  Sequence b2 = make_seq({5, 6, 7});
  bm.update_block_hashes(b2);
  bm.find_cached_prefix(b2, 1, &cached);
  EXPECT_EQ(cached.size(), 1u) << "b's block was freed later and must survive";
  EXPECT_TRUE(bm.check_invariants());
}

TEST(BlockManager, DuplicatePrefixComputedTwiceKeepsOneCachedCopy) {
  BlockManager bm(8, 2, true, 7);
  Sequence a = make_seq({1, 2, 3}), b = make_seq({1, 2, 3});
  ASSERT_TRUE(bm.allocate(a, {}, 3));
  ASSERT_TRUE(bm.allocate(b, {}, 3));
  a.num_computed_tokens = b.num_computed_tokens = 3;
  bm.publish_computed_blocks(a);
  bm.publish_computed_blocks(b);
  bm.free(a.block_table);
  bm.free(b.block_table);
  EXPECT_EQ(bm.stats().num_cached, 1);
  EXPECT_TRUE(bm.check_invariants());
}

TEST(BlockManager, HitRateCounters) {
  BlockManager bm(8, 2, true, 7);
  bm.record_prefix_lookup(10, 4);
  bm.record_prefix_lookup(6, 0);
  EXPECT_EQ(bm.stats().prefix_queries, 16);
  EXPECT_EQ(bm.stats().prefix_hits, 4);
}

}  // namespace
}  // namespace tandem::engine
