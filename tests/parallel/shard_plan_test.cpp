// The tensor-parallel split of a model's dimensions: every rank's ranges, the replication of KV heads
// when there are fewer than ranks, and clear refusals of shapes that do not split.
#include <gtest/gtest.h>

#include "parallel/shard_plan.h"

namespace tandem::parallel {
namespace {

ModelShape shape(int heads, int kv_heads, int inter, int vocab) {
  return ModelShape{.num_heads = heads, .num_kv_heads = kv_heads, .head_dim = 16, .intermediate_size = inter, .vocab_size = vocab};
}

ShardPlan plan(const ModelShape& s, int rank, int world) {
  auto p = plan_shard(s, rank, world);
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  return *p;
}

TEST(ShardPlan, WorldOneHoldsEverything) {
  const ModelShape s = shape(4, 2, 160, 384);
  const ShardPlan p = plan(s, 0, 1);
  EXPECT_EQ(p.q_heads, (Range{0, 4}));
  EXPECT_EQ(p.kv_heads, (Range{0, 2}));
  EXPECT_EQ(p.intermediate, (Range{0, 160}));
  EXPECT_EQ(p.vocab, (Range{0, 384}));
  EXPECT_EQ(p.vocab_shard, 384);
  EXPECT_EQ(p.kv_replicas, 1);
  EXPECT_EQ(p.group(), 2);
}

TEST(ShardPlan, GqaSplitsHeadsRowsAndVocabularyEvenly) {
  // Llama-3.1-70B's attention and MLP shape over 8 ranks.
  const ModelShape s = shape(64, 8, 28672, 128256);
  for (int r = 0; r < 8; ++r) {
    const ShardPlan p = plan(s, r, 8);
    EXPECT_EQ(p.q_heads, (Range{8 * r, 8 * r + 8}));
    EXPECT_EQ(p.kv_heads, (Range{r, r + 1}));
    EXPECT_EQ(p.group(), 8);
    EXPECT_EQ(p.intermediate, (Range{3584 * r, 3584 * (r + 1)}));
    EXPECT_EQ(p.vocab, (Range{16032 * r, 16032 * (r + 1)}));
    EXPECT_EQ(kv_head_home(s, 8, r).rank, r);
    EXPECT_EQ(kv_head_home(s, 8, r).local_head, 0);
  }
}

TEST(ShardPlan, FewerKvHeadsThanRanksReplicatesTheHeadEachRanksQHeadsRead) {
  // 8 q heads, 2 KV heads (q heads 0-3 read KV head 0, 4-7 read 1), over 4 ranks.
  const ModelShape s = shape(8, 2, 128, 288);
  const Range expected_kv[] = {{0, 1}, {0, 1}, {1, 2}, {1, 2}};
  for (int r = 0; r < 4; ++r) {
    const ShardPlan p = plan(s, r, 4);
    EXPECT_EQ(p.q_heads, (Range{2 * r, 2 * r + 2}));
    EXPECT_EQ(p.kv_heads, expected_kv[r]) << "rank " << r;
    EXPECT_EQ(p.kv_replicas, 2);
    EXPECT_EQ(p.group(), 2);
    // Every q head of the rank reads the rank's KV head in the whole model too (head / group).
    for (int h = p.q_heads.begin; h < p.q_heads.end; ++h) EXPECT_EQ(h / 4, p.kv_heads.begin);
  }
  EXPECT_EQ(kv_head_home(s, 4, 0).rank, 0);
  EXPECT_EQ(kv_head_home(s, 4, 1).rank, 2);
  EXPECT_EQ(kv_head_home(s, 4, 1).local_head, 0);
}

TEST(ShardPlan, MqaReplicatesItsOneKvHeadOnEveryRank) {
  const ModelShape s = shape(4, 1, 128, 320);
  for (int r = 0; r < 4; ++r) {
    const ShardPlan p = plan(s, r, 4);
    EXPECT_EQ(p.kv_heads, (Range{0, 1}));
    EXPECT_EQ(p.kv_replicas, 4);
    EXPECT_EQ(p.q_heads.size(), 1);
  }
}

TEST(ShardPlan, UnevenVocabularyGivesTheLastRanksShorterShards) {
  const ModelShape s = shape(4, 4, 8, 10);
  EXPECT_EQ(plan(s, 0, 4).vocab, (Range{0, 3}));
  EXPECT_EQ(plan(s, 2, 4).vocab, (Range{6, 9}));
  EXPECT_EQ(plan(s, 3, 4).vocab, (Range{9, 10}));
  EXPECT_EQ(plan(s, 3, 4).vocab_shard, 3);
  // Every token is owned by exactly one rank.
  int covered = 0;
  for (int r = 0; r < 4; ++r) covered += plan(s, r, 4).vocab.size();
  EXPECT_EQ(covered, 10);
}

TEST(ShardPlan, RefusesShapesThatDoNotSplit) {
  auto message = [](const ModelShape& s, int world) { return check_splittable(s, world).message(); };
  EXPECT_NE(message(shape(4, 2, 160, 384), 3).find("num_attention_heads (4) is not a multiple of 3"), std::string::npos);
  EXPECT_NE(message(shape(12, 6, 48, 384), 4).find("num_key_value_heads (6) is not a multiple of 4"), std::string::npos);
  EXPECT_NE(message(shape(12, 4, 48, 384), 6).find("6 is not a multiple of num_key_value_heads (4)"), std::string::npos);
  EXPECT_NE(message(shape(4, 2, 162, 384), 4).find("intermediate_size (162) is not a multiple of 4"), std::string::npos);
  EXPECT_FALSE(check_splittable(shape(4, 2, 160, 384), 0).ok());
  EXPECT_FALSE(plan_shard(shape(4, 2, 160, 384), 2, 2).ok());
  EXPECT_EQ(check_splittable(shape(4, 2, 160, 384), 3).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
