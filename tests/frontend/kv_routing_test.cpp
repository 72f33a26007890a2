// KV-aware routing (issue 22): the frontend's KV index applies a worker's KV events (the engine's
// own block manager produces them here), resynchronises from a snapshot after a lost batch and ends
// equal to the worker's cache; the embedded directory asks for snapshots and routes by the index;
// the router's cost picks the cached worker under load, and each --router-mode behaves as named.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <mutex>
#include <numeric>
#include <thread>

#include "common/block_hash.h"
#include "engine/block_manager.h"
#include "frontend/kv_index.h"
#include "frontend/post_gate.h"
#include "frontend/router.h"
#include "frontend/worker_directory.h"
#include "rpc/connection.h"

namespace tandem::frontend {
namespace {

constexpr int kBlock = 4;
constexpr uint64_t kSalt = 77;

std::vector<int32_t> tokens(int n, int start) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// A worker's prefix cache: the engine's block manager, driven as the scheduler drives it, with its
// events taken per "step" and numbered as the worker's publisher numbers them.
struct WorkerCache {
  engine::BlockManager bm{8, kBlock, true, kSalt};
  uint64_t seq = 0;
  WorkerCache() { bm.enable_events(); }

  // Prefills `prompt`, publishes its full blocks, and frees it (its blocks stay cached, evictable).
  void run(const std::vector<int32_t>& prompt) {
    engine::Sequence s;
    s.token_ids = prompt;
    s.num_prompt_tokens = s.num_tokens();
    std::vector<int32_t> cached;
    bm.update_block_hashes(s);
    bm.find_cached_prefix(s, (s.num_tokens() - 1) / kBlock, &cached);
    ASSERT_TRUE(bm.allocate(s, cached, s.num_tokens()));
    s.num_computed_tokens = s.num_tokens();
    bm.publish_computed_blocks(s);
    bm.free(s.block_table);
  }
  rpc::pb::KvEvents step() {
    rpc::pb::KvEvents e;
    std::vector<uint64_t> stored, removed;
    bm.take_events(&stored, &removed);
    e.set_seq(++seq);
    e.mutable_stored()->Add(stored.begin(), stored.end());
    e.mutable_removed()->Add(removed.begin(), removed.end());
    return e;
  }
  rpc::pb::KvSnapshot snapshot() const {
    rpc::pb::KvSnapshot s;
    s.set_seq(seq);
    const auto hashes = bm.cached_hashes();
    s.mutable_hashes()->Add(hashes.begin(), hashes.end());
    return s;
  }
  std::vector<uint64_t> cached() const {
    auto h = bm.cached_hashes();
    std::sort(h.begin(), h.end());
    return h;
  }
};

TEST(KvIndex, AppliesStoreAndEvictEventsFromTheEnginesBlockManager) {
  WorkerCache worker;
  KvIndex index;
  index.add_worker(1);
  EXPECT_TRUE(index.awaiting_snapshot(1));
  index.apply_snapshot(1, worker.snapshot());  // empty cache
  const auto a = tokens(12, 100);              // 3 full blocks
  worker.run(a);
  EXPECT_EQ(index.apply(1, worker.step()), KvIndex::Applied::kApplied);
  EXPECT_EQ(index.blocks(1), worker.cached());
  EXPECT_EQ(index.blocks(1).size(), 3u);
  const auto hashes = chain_block_hashes(kSalt, kBlock, a);
  EXPECT_EQ(index.overlap_blocks(1, hashes), 3);
  EXPECT_EQ(index.overlap_blocks(2, hashes), 0);  // unknown worker
  // A longer prompt sharing the first two blocks: the overlap stops at the first block off the path.
  auto b = a;
  b[9] = 5;
  EXPECT_EQ(index.overlap_blocks(1, chain_block_hashes(kSalt, kBlock, b)), 2);

  // 8 blocks in the pool: two more 12-token prompts evict a's blocks (least recently freed first).
  worker.run(tokens(12, 500));
  worker.run(tokens(12, 900));
  const rpc::pb::KvEvents e = worker.step();
  EXPECT_GT(e.removed_size(), 0);
  EXPECT_EQ(index.apply(1, e), KvIndex::Applied::kApplied);
  EXPECT_EQ(index.blocks(1), worker.cached());
  EXPECT_LT(index.overlap_blocks(1, hashes), 3);
  index.remove_worker(1);
  EXPECT_EQ(index.num_nodes(), 0u);
}

TEST(KvIndex, ADroppedBatchTriggersAResyncThatEndsEqualToTheWorkersCache) {
  WorkerCache worker;
  KvIndex index;
  index.add_worker(7);
  worker.run(tokens(8, 1));
  index.apply_snapshot(7, worker.snapshot());  // before the snapshot's batch was taken: overlaps it
  EXPECT_EQ(index.apply(7, worker.step()), KvIndex::Applied::kApplied);
  worker.run(tokens(12, 300));
  (void)worker.step();  // lost on the way
  worker.run(tokens(12, 600));
  EXPECT_EQ(index.apply(7, worker.step()), KvIndex::Applied::kNeedSnapshot);
  EXPECT_TRUE(index.awaiting_snapshot(7));
  EXPECT_TRUE(index.blocks(7).empty());  // nothing is trusted until the snapshot
  // Batches before the snapshot arrives are ignored; the snapshot then covers them.
  worker.run(tokens(8, 2000));
  EXPECT_EQ(index.apply(7, worker.step()), KvIndex::Applied::kIgnored);
  index.apply_snapshot(7, worker.snapshot());
  EXPECT_FALSE(index.awaiting_snapshot(7));
  EXPECT_EQ(index.blocks(7), worker.cached());
  worker.run(tokens(12, 4000));
  EXPECT_EQ(index.apply(7, worker.step()), KvIndex::Applied::kApplied);
  EXPECT_EQ(index.blocks(7), worker.cached());
}

TEST(KvIndex, PendingRequestsCountAsHeldUntilRemoved) {
  KvIndex index;
  index.add_worker(1);
  index.add_worker(2);
  const auto hashes = chain_block_hashes(kSalt, kBlock, tokens(16, 1));
  index.add_pending(1, "r1", hashes);
  index.add_pending(1, "r2", {hashes.begin(), hashes.begin() + 2});
  EXPECT_EQ(index.overlap_blocks(1, hashes), 4);
  EXPECT_EQ(index.overlap_blocks(2, hashes), 0);
  index.remove_pending(1, "r1");
  EXPECT_EQ(index.overlap_blocks(1, hashes), 2);
  index.remove_pending(1, "r2");
  EXPECT_EQ(index.overlap_blocks(1, hashes), 0);
}

TEST(BlockHash, TheEnginesChainHashIsTheSharedOne) {
  engine::BlockManager bm(4, kBlock, true, kSalt);
  engine::Sequence s;
  s.token_ids = tokens(9, 40);
  bm.update_block_hashes(s);
  EXPECT_EQ(s.block_hashes, chain_block_hashes(kSalt, kBlock, s.token_ids));
}

Candidate decoder(int load_blocks, int overlap_tokens = 0, int outstanding = 0) {
  Candidate c;
  c.can_decode = true;
  c.block_size = 16;
  c.load_blocks = load_blocks;
  c.overlap_tokens = overlap_tokens;
  c.outstanding = outstanding;
  return c;
}

TEST(Router, KvCostPicksTheCachedWorkerUnderLoad) {
  RouterOptions o;
  o.mode = RouterMode::kKv;
  o.kv_overlap_score_weight = 1.0;
  // 800-token prompt = 50 blocks. Worker 1 holds 48 of them but runs 40 blocks of decodes; worker 0 is
  // idle and holds nothing: 50 > 2 + 40, so the cached worker wins.
  std::vector<Candidate> c = {decoder(0), decoder(40, 768, 3), decoder(10)};
  Decision d = route(c, 800, 0, true, o);
  EXPECT_EQ(d.decode, 1);
  EXPECT_EQ(d.uncached_tokens, 32);
  // Under enough load the idle worker wins after all.
  c[1].load_blocks = 60;
  EXPECT_EQ(route(c, 800, 0, true, o).decode, 0);
  // The weight shifts the balance: prefill counts 2x (the default counts it 5x).
  o.kv_overlap_score_weight = 2.0;
  EXPECT_EQ(route(c, 800, 0, true, o).decode, 1);
  // least-loaded ignores the cache when loads differ.
  o.mode = RouterMode::kLeastLoaded;
  EXPECT_EQ(route(c, 800, 0, true, o).decode, 0);
}

TEST(Router, KvChoosesThePrefillWorkerByTheSameCost) {
  RouterOptions o;
  o.mode = RouterMode::kKv;
  o.kv_overlap_score_weight = 1.0;
  Candidate p0, p1;
  p0.is_prefill = p1.is_prefill = true;
  p0.block_size = p1.block_size = 16;
  p1.overlap_tokens = 1600;     // holds the prompt
  p1.prefills_outstanding = 0;
  p0.prefills_outstanding = 0;
  std::vector<Candidate> c = {decoder(0), p0, p1};
  Decision d = route(c, 3200, 0, true, o);
  EXPECT_TRUE(d.remote);
  EXPECT_EQ(d.prefill, 2);
  c[2].prefills_outstanding = 2;  // 2 x 200 blocks queued > 100 blocks saved
  EXPECT_EQ(route(c, 3200, 0, true, o).prefill, 1);
}

TEST(Router, ModesBehaveAsNamed) {
  std::vector<Candidate> c = {decoder(0, 0, 5), decoder(0, 0, 1), decoder(0, 0, 3)};
  RouterOptions o;
  o.mode = RouterMode::kRoundRobin;
  std::vector<int> seen;
  for (uint64_t t = 0; t < 6; ++t) seen.push_back(route(c, 10, 0, true, o, RouteDraw{0.0, t}).decode);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  o.mode = RouterMode::kRandom;
  EXPECT_EQ(route(c, 10, 0, true, o, RouteDraw{0.1, 0}).decode, 0);
  EXPECT_EQ(route(c, 10, 0, true, o, RouteDraw{0.5, 0}).decode, 1);
  EXPECT_EQ(route(c, 10, 0, true, o, RouteDraw{0.99, 0}).decode, 2);
  o.mode = RouterMode::kLeastLoaded;
  EXPECT_EQ(route(c, 10, 0, true, o).decode, 1);
  // Softmax over costs: a cold temperature is the lowest cost; a hot one reaches the others.
  o.mode = RouterMode::kKv;
  std::vector<Candidate> k = {decoder(0, 160), decoder(40), decoder(40)};  // costs 0, 90, 90
  o.temperature = 0.01;
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(route(k, 160, 0, true, o, RouteDraw{u, 0}).decode, 0);
  o.temperature = 100;
  EXPECT_EQ(route(k, 160, 0, true, o, RouteDraw{0.0, 0}).decode, 0);
  EXPECT_EQ(route(k, 160, 0, true, o, RouteDraw{0.999, 0}).decode, 2);
  EXPECT_EQ(parse_router_mode("round-robin"), RouterMode::kRoundRobin);
  EXPECT_EQ(parse_router_mode("least-loaded"), RouterMode::kLeastLoaded);
  EXPECT_FALSE(parse_router_mode("fastest").has_value());
  EXPECT_STREQ(router_mode_name(RouterMode::kKv), "kv");
}

// ---- the embedded directory over real request-plane connections ----

class QueueExecutor : public Executor {
 public:
  void post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
  }
  void post_after(int, std::function<void()> fn) override { post(std::move(fn)); }
  bool run_until(const std::function<bool()>& done) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (!done() && Clock::now() < deadline) {
      std::function<void()> fn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!queue_.empty()) {
          fn = std::move(queue_.front());
          queue_.pop_front();
        }
      }
      if (fn) {
        fn();
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    return done();
  }

 private:
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
};

struct WorkerEnd {
  std::shared_ptr<rpc::Connection> conn;
  std::mutex mu;
  int snapshot_requests = 0;
  ~WorkerEnd() {
    if (!conn) return;
    conn->close();
    conn->wait_closed(std::chrono::seconds(2));
  }
  void connect(uint16_t port, const std::string& id) {
    auto dialed = rpc::Connection::dial("127.0.0.1:" + std::to_string(port), 1000);
    ASSERT_TRUE(dialed.ok());
    conn = *dialed;
    conn->start(
        [this](rpc::pb::Envelope& env) {
          std::lock_guard<std::mutex> lock(mu);
          if (env.has_kv_snapshot_request()) ++snapshot_requests;
        },
        [](const Status&) {});
    rpc::pb::Envelope env;
    auto* r = env.mutable_register_();
    r->set_worker_id(id);
    r->set_role(rpc::pb::ROLE_BOTH);
    r->set_model("m");
    r->set_block_size(kBlock);
    r->set_max_model_len(1000);
    r->set_kv_events(true);
    r->set_kv_hash_salt(kSalt);
    conn->send(env);
  }
  int requests() {
    std::lock_guard<std::mutex> lock(mu);
    return snapshot_requests;
  }
  void send(const rpc::pb::KvEvents& e) {
    rpc::pb::Envelope env;
    *env.mutable_kv_events() = e;
    conn->send(env);
  }
  void send(const rpc::pb::KvSnapshot& s) {
    rpc::pb::Envelope env;
    *env.mutable_kv_snapshot() = s;
    conn->send(env);
  }
};

TEST(KvDirectory, RoutesByTheIndexAndAsksForASnapshotAfterRegisteringAndAfterAGap) {
  QueueExecutor io;
  auto gate = std::make_shared<PostGate>();
  gate->io = &io;
  auto directory = make_worker_directory(DirectoryOptions{}, gate);
  directory->set_events(DirectoryEvents{});
  directory->start();
  {
    WorkerCache cache;
    WorkerEnd worker;
    worker.connect(directory->registry_port(), "w");
    ASSERT_TRUE(io.run_until([&] { return worker.requests() == 1; }));
    WorkerKey key = 0;
    directory->for_each_worker([&](const WorkerView& v) { key = v.key; });
    const auto prompt = tokens(12, 10);
    cache.run(prompt);
    worker.send(cache.snapshot());  // as of batch 0: the batch below overlaps it
    worker.send(cache.step());
    auto overlap = [&] {
      RoutingPool pool = directory->pool("m", prompt, 0);
      return pool.candidates.empty() ? -1 : pool.candidates[0].overlap_tokens;
    };
    ASSERT_TRUE(io.run_until([&] { return overlap() == 12; }));
    // A lost batch: the next one makes the directory ask again, and the worker's blocks are dropped
    // until the snapshot comes.
    cache.run(tokens(8, 500));
    (void)cache.step();
    cache.run(tokens(8, 900));
    worker.send(cache.step());
    ASSERT_TRUE(io.run_until([&] { return worker.requests() == 2; }));
    EXPECT_EQ(overlap(), 0);
    worker.send(cache.snapshot());
    ASSERT_TRUE(io.run_until([&] { return overlap() == 12; }));
    // A request routed here counts as cached before the worker reports it.
    const auto other = tokens(16, 3000);
    EXPECT_EQ(directory->pool("m", other, 0).candidates[0].overlap_tokens, 0);
    directory->assign(key, "r1");
    directory->note_routed(key, "r1", other);
    RoutingPool pool = directory->pool("m", other, 0);
    EXPECT_EQ(pool.candidates[0].overlap_tokens, 16);
    EXPECT_EQ(pool.candidates[0].load_blocks, 4);
    directory->unassign(key, "r1");
    pool = directory->pool("m", other, 0);
    EXPECT_EQ(pool.candidates[0].overlap_tokens, 0);
    EXPECT_EQ(pool.candidates[0].load_blocks, 0);
  }
  directory->stop_threads();
  gate->close();
  directory->shutdown();
}

}  // namespace
}  // namespace tandem::frontend
