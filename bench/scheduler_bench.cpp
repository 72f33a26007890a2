// scheduler_bench: the engine's own host time per step — Scheduler::schedule(), complete_step() and the
// bookkeeping of finished and arriving sequences — with ~256 running decodes and a steady stream of
// prefills chunked into the rest of the token budget. No model math and no sampling.
//
//   build/bench/scheduler_bench [--steps N] [--running N] [--seed S]
//
// Traffic: prompts of 128..2048 tokens (half of them behind a shared 256-token system prompt, so the
// prefix cache is exercised), outputs of 32..512 tokens; max_batch_tokens 2048, max_seqs 320, 16-token
// blocks, a pool of 32768 blocks (some preemption under load).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/scheduler.h"

using namespace tandem::engine;

namespace {

struct BenchSeq {
  std::unique_ptr<Sequence> seq;
  int target_output = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int steps = 3000, target_running = 256;
  uint32_t seed = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--running")) target_running = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--seed")) seed = static_cast<uint32_t>(std::atoi(argv[i + 1]));
  }
  constexpr int kBlockSize = 16, kNumBlocks = 32768, kBudget = 2048, kMaxSeqs = 320;
  BlockManager blocks(kNumBlocks, kBlockSize, true, 42);
  Scheduler sched({kBudget, kMaxSeqs}, &blocks);
  std::mt19937 rng(seed);
  std::vector<int32_t> system_prompt(256);
  for (auto& t : system_prompt) t = static_cast<int32_t>(rng() % 150000);
  std::unordered_map<int64_t, BenchSeq> live;
  live.reserve(1024);
  int64_t next_id = 0;

  auto arrive = [&] {
    BenchSeq b;
    b.seq = std::make_unique<Sequence>();
    b.seq->seq_id = next_id;
    const int len = 128 + static_cast<int>(rng() % 1921);
    const bool shared = rng() % 2 == 0;
    b.seq->token_ids.reserve(len + 512);
    for (int i = 0; i < len; ++i) {
      b.seq->token_ids.push_back(shared && i < 256 ? system_prompt[i] : static_cast<int32_t>(rng() % 150000));
    }
    b.seq->num_prompt_tokens = len;
    b.target_output = 32 + static_cast<int>(rng() % 481);
    sched.add_waiting(b.seq.get());
    live.emplace(next_id++, std::move(b));
  };

  std::vector<double> step_us;
  step_us.reserve(steps);
  std::vector<int64_t> done;
  int64_t tokens = 0, decodes = 0, running_sum = 0;
  const int warmup = 1000;
  for (int step = 0; step < warmup + steps; ++step) {
    // Keep about target_running decoding plus a few waiting prompts.
    while (sched.num_running() + sched.num_waiting() < target_running + 8) arrive();

    const auto t0 = std::chrono::steady_clock::now();
    const SchedulerOutput& out = sched.schedule();
    sched.complete_step();
    done.clear();
    for (const ScheduledSeq& s : out.seqs) {
      if (!s.needs_sample) continue;
      s.seq->token_ids.push_back(static_cast<int32_t>(s.seq->seq_id & 0xffff));
      if (s.seq->num_output_tokens() >= live.at(s.seq->seq_id).target_output) done.push_back(s.seq->seq_id);
    }
    for (int64_t id : done) sched.finish(live.at(id).seq.get());
    const auto t1 = std::chrono::steady_clock::now();

    for (int64_t id : done) live.erase(id);
    if (step >= warmup) {
      step_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      tokens += out.num_batched_tokens;
      for (const ScheduledSeq& s : out.seqs) decodes += s.num_new_tokens == 1 ? 1 : 0;
      running_sum += sched.num_running();
    }
  }
  std::vector<double> sorted = step_us;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) { return sorted[static_cast<size_t>(p * (sorted.size() - 1))]; };
  double mean = 0;
  for (double v : step_us) mean += v;
  mean /= step_us.size();
  const BlockManagerStats s = blocks.stats();
  std::printf("scheduler_bench: steps=%d avg_running=%.1f avg_decodes_per_step=%.1f avg_batched_tokens=%.1f preemptions=%lld "
              "prefix_hit_rate=%.3f\n",
              steps, static_cast<double>(running_sum) / steps, static_cast<double>(decodes) / steps,
              static_cast<double>(tokens) / steps, static_cast<long long>(sched.num_preemptions()),
              s.prefix_queries ? static_cast<double>(s.prefix_hits) / s.prefix_queries : 0.0);
  std::printf("us/step: median=%.2f p90=%.2f p99=%.2f mean=%.2f\n", pct(0.5), pct(0.9), pct(0.99), mean);
  return 0;
}
