// Scheduler: budget and cap, decodes before prefill chunks, newest-first preemption, and a property
// test of thousands of random steps after which no block is leaked or double-freed.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <numeric>
#include <random>

namespace tandem::engine {
namespace {

std::unique_ptr<Sequence> make_seq(int64_t id, int prompt_len, int first_token = 0) {
  auto s = std::make_unique<Sequence>();
  s->seq_id = id;
  s->token_ids.resize(prompt_len);
  std::iota(s->token_ids.begin(), s->token_ids.end(), first_token);
  s->num_prompt_tokens = prompt_len;
  return s;
}

// Applies a step as the engine would after a successful forward: every sequence that reached its end
// gets one more token.
void complete(Scheduler& sched, const SchedulerOutput& out, int32_t token = 1) {
  sched.complete_step();
  for (const ScheduledSeq& s : out.seqs) {
    if (s.needs_sample) s.seq->token_ids.push_back(token);
  }
}

TEST(Scheduler, DecodesFirstThenChunkedPrefillInTheRemainingBudget) {
  BlockManager bm(64, 4, true, 1);
  Scheduler sched({8, 16}, &bm);
  auto a = make_seq(1, 3), b = make_seq(2, 5, 100), c = make_seq(3, 20, 200);
  sched.add_waiting(a.get());
  sched.add_waiting(b.get());
  complete(sched, sched.schedule());  // a (3) + b (5) prefill in one step
  sched.add_waiting(c.get());
  const SchedulerOutput& out = sched.schedule();
  ASSERT_EQ(out.seqs.size(), 3u);
  EXPECT_EQ(out.seqs[0].seq, a.get());
  EXPECT_EQ(out.seqs[0].num_new_tokens, 1);
  EXPECT_EQ(out.seqs[1].seq, b.get());
  EXPECT_EQ(out.seqs[1].num_new_tokens, 1);
  EXPECT_EQ(out.seqs[2].seq, c.get());
  EXPECT_EQ(out.seqs[2].num_new_tokens, 6);
  EXPECT_FALSE(out.seqs[2].needs_sample);
  EXPECT_EQ(out.num_batched_tokens, 8);
  complete(sched, out);
  // c continues its prefill as a running sequence, after the decodes.
  const SchedulerOutput& next = sched.schedule();
  ASSERT_EQ(next.seqs.size(), 3u);
  EXPECT_EQ(next.seqs[2].seq, c.get());
  EXPECT_EQ(next.seqs[2].num_new_tokens, 6);
}

TEST(Scheduler, NewerDecodesGoBeforeAnOlderSequencesPrefillChunk) {
  BlockManager bm(64, 4, true, 1);
  Scheduler sched({8, 16}, &bm);
  auto a = make_seq(1, 30);
  sched.add_waiting(a.get());
  complete(sched, sched.schedule());  // a: first chunk of 8
  // b arrives with its prompt's KV already in place (decode from KV) and one token to compute.
  auto b = make_seq(2, 4, 100);
  ASSERT_TRUE(bm.allocate(*b, {}, 4));
  b->num_computed_tokens = 4;
  b->token_ids.push_back(7);
  sched.add_running(b.get());
  const SchedulerOutput& out = sched.schedule();
  ASSERT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(out.seqs[0].seq, b.get());
  EXPECT_EQ(out.seqs[0].num_new_tokens, 1);
  EXPECT_EQ(out.seqs[1].seq, a.get());
  EXPECT_EQ(out.seqs[1].num_new_tokens, 7);
}

TEST(Scheduler, RespectsMaxSeqs) {
  BlockManager bm(64, 4, true, 1);
  Scheduler sched({100, 2}, &bm);
  auto a = make_seq(1, 3), b = make_seq(2, 3, 10), c = make_seq(3, 3, 20);
  sched.add_waiting(a.get());
  sched.add_waiting(b.get());
  sched.add_waiting(c.get());
  const SchedulerOutput& out = sched.schedule();
  EXPECT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(sched.num_waiting(), 1);
}

TEST(Scheduler, PreemptsNewestFirstAndRecomputesLater) {
  BlockManager bm(4, 2, false, 1);
  Scheduler sched({100, 8}, &bm);
  auto a = make_seq(1, 2), b = make_seq(2, 2, 10);
  sched.add_waiting(a.get());
  sched.add_waiting(b.get());
  complete(sched, sched.schedule());  // prefill: 1 block each
  complete(sched, sched.schedule());  // token 3: a second block each, all 4 blocks in use
  complete(sched, sched.schedule());  // token 4 still fits in the second block
  // Token 5 needs a third block for both; a (older) goes first and b is preempted.
  const SchedulerOutput& out = sched.schedule();
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(out.preempted[0], b.get());
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);
  EXPECT_TRUE(b->block_table.empty());
  EXPECT_EQ(b->num_computed_tokens, 0);
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].seq, a.get());
  EXPECT_EQ(sched.num_preemptions(), 1);
  sched.finish(a.get());
  // b is readmitted and recomputes all of its tokens (prompt and output) in one chunk.
  const SchedulerOutput& again = sched.schedule();
  ASSERT_EQ(again.seqs.size(), 1u);
  EXPECT_EQ(again.seqs[0].seq, b.get());
  EXPECT_EQ(again.seqs[0].num_new_tokens, b->num_tokens());
  EXPECT_TRUE(again.seqs[0].needs_sample);
}

TEST(Scheduler, AdmissionReusesPrefixCacheButComputesTheLastToken) {
  BlockManager bm(16, 4, true, 1);
  Scheduler sched({100, 8}, &bm);
  auto a = make_seq(1, 8);
  sched.add_waiting(a.get());
  complete(sched, sched.schedule());
  sched.finish(a.get());
  auto b = make_seq(2, 8);  // the same 8 tokens: both blocks cached, but the last token is recomputed
  sched.add_waiting(b.get());
  const SchedulerOutput& out = sched.schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(b->num_computed_tokens, 4);
  EXPECT_EQ(b->num_cached_prompt_tokens, 4);
  EXPECT_EQ(out.seqs[0].num_new_tokens, 4);
  EXPECT_EQ(bm.stats().prefix_hits, 4);
}

TEST(Scheduler, ForkSharesFullBlocksAndRecomputesThePartialOne) {
  BlockManager bm(16, 4, true, 1);
  Scheduler sched({100, 8}, &bm);
  auto a = make_seq(1, 6);
  sched.add_waiting(a.get(), 2);
  const SchedulerOutput& out = sched.schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  sched.complete_step();
  auto child = make_seq(2, 6);
  child->token_ids.push_back(42);
  sched.fork(a.get(), child.get());
  a->token_ids.push_back(41);
  EXPECT_EQ(child->block_table.size(), 1u);
  EXPECT_EQ(child->block_table[0], a->block_table[0]);
  EXPECT_EQ(bm.ref_count(a->block_table[0]), 2);
  EXPECT_EQ(child->num_computed_tokens, 4);
  const SchedulerOutput& next = sched.schedule();
  ASSERT_EQ(next.seqs.size(), 2u);
  EXPECT_EQ(next.seqs[1].seq, child.get());
  EXPECT_EQ(next.seqs[1].num_new_tokens, 3);  // prompt tokens 4, 5 and its own first token
  EXPECT_NE(child->block_table[1], a->block_table[1]);
}

// Random arrivals, prompt and output lengths (prompts often share prefixes), n > 1 forks, aborts and a
// pool small enough to preempt often. After every step: ref counts equal the number of tables holding
// each block, the step honours budget and cap, and every scheduled table covers its tokens. At the
// end every block is free (cached or not).
TEST(Scheduler, Property_RandomTrafficNeverLeaksOrDoubleFrees) {
  constexpr int kNumBlocks = 48, kBlockSize = 4, kBudget = 24, kMaxSeqs = 6;
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    BlockManager bm(kNumBlocks, kBlockSize, seed != 3, seed);
    Scheduler sched({kBudget, kMaxSeqs}, &bm);
    struct Sim {
      std::unique_ptr<Sequence> seq;
      int target_output = 0;
      int seats = 1;
      bool forked = false;
      int64_t parent = -1;
    };
    std::map<int64_t, Sim> live;
    int64_t next_id = 0;
    const std::vector<int32_t> shared_prefix = {7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9};
    int64_t finished = 0, aborted = 0;
    auto check_refs = [&] {
      std::vector<int> refs(kNumBlocks, 0);
      for (auto& [id, sim] : live) {
        for (int32_t b : sim.seq->block_table) ++refs[b];
      }
      for (int b = 0; b < kNumBlocks; ++b) ASSERT_EQ(refs[b], bm.ref_count(b)) << "block " << b;
      ASSERT_TRUE(bm.check_invariants());
    };
    const int kSteps = 3000;
    for (int step = 0; step < kSteps + 2000; ++step) {
      const bool arrivals = step < kSteps;
      if (arrivals && rng() % 3 == 0) {
        Sim sim;
        const int len = 1 + static_cast<int>(rng() % 40);
        sim.seq = std::make_unique<Sequence>();
        sim.seq->seq_id = next_id;
        for (int i = 0; i < len; ++i) {
          sim.seq->token_ids.push_back(rng() % 2 && i < static_cast<int>(shared_prefix.size()) ? shared_prefix[i]
                                                                                              : static_cast<int32_t>(rng() % 5));
        }
        sim.seq->num_prompt_tokens = len;
        sim.target_output = 1 + static_cast<int>(rng() % 30);
        sim.seats = rng() % 8 == 0 ? 2 : 1;
        sched.add_waiting(sim.seq.get(), sim.seats);
        live.emplace(next_id++, std::move(sim));
      }
      if (!live.empty() && rng() % 17 == 0) {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        sched.finish(it->second.seq.get());
        live.erase(it);
        ++aborted;
      }
      const SchedulerOutput& out = sched.schedule();
      ASSERT_LE(out.num_batched_tokens, kBudget);
      ASSERT_LE(static_cast<int>(out.seqs.size()), kMaxSeqs);
      int tokens = 0;
      for (const ScheduledSeq& s : out.seqs) {
        ASSERT_EQ(s.seq->status, SequenceStatus::kRunning);
        ASSERT_GT(s.num_new_tokens, 0);
        ASSERT_GE(static_cast<int>(s.seq->block_table.size()) * kBlockSize, s.seq->num_computed_tokens + s.num_new_tokens);
        tokens += s.num_new_tokens;
      }
      ASSERT_EQ(tokens, out.num_batched_tokens);
      for (Sequence* p : out.preempted) ASSERT_TRUE(p->block_table.empty());
      check_refs();
      if (HasFatalFailure()) return;
      sched.complete_step();
      std::vector<int64_t> done;
      for (const ScheduledSeq& s : out.seqs) {
        if (!s.needs_sample) continue;
        Sim& sim = live.at(s.seq->seq_id);
        if (sim.seats > 1 && !sim.forked) {
          sim.forked = true;
          Sim child;
          child.seq = std::make_unique<Sequence>();
          child.seq->seq_id = next_id;
          child.seq->token_ids = s.seq->token_ids;
          child.seq->num_prompt_tokens = s.seq->num_prompt_tokens;
          child.seq->token_ids.push_back(static_cast<int32_t>(rng() % 5));
          child.target_output = sim.target_output;
          sched.fork(s.seq, child.seq.get());
          live.emplace(next_id++, std::move(child));
        }
        s.seq->token_ids.push_back(static_cast<int32_t>(rng() % 5));
        if (s.seq->num_output_tokens() >= sim.target_output) done.push_back(s.seq->seq_id);
      }
      for (int64_t id : done) {
        sched.finish(live.at(id).seq.get());
        live.erase(id);
        ++finished;
      }
      check_refs();
      if (HasFatalFailure()) return;
      if (!arrivals && live.empty()) break;
    }
    EXPECT_TRUE(live.empty()) << "sequences left after the drain phase: " << live.size();
    for (auto& [id, sim] : live) sched.finish(sim.seq.get());
    const BlockManagerStats stats = bm.stats();
    EXPECT_EQ(stats.num_used, 0);
    EXPECT_EQ(stats.num_free, kNumBlocks);
    EXPECT_TRUE(bm.check_invariants());
    EXPECT_GT(sched.num_preemptions(), 0) << "the pool should have been small enough to preempt";
    EXPECT_GT(finished, 100);
    EXPECT_GT(aborted, 10);
    if (seed != 3) {
      EXPECT_GT(stats.prefix_hits, 0);
    }
  }
}

}  // namespace
}  // namespace tandem::engine
