// The CPU communicator over 1-4 ranks (threads): sums, gathers and broadcasts give the expected values on
// every rank, many rounds of mixed collectives finish, results are the same to the bit on every run, and
// a failed rank or mismatched sizes fail the group instead of leaving ranks waiting.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <thread>

#include "parallel/communicator.h"

namespace tandem::parallel {
namespace {

// Runs body(communicator) on one thread per rank and joins them.
void run_ranks(int world, const std::function<void(Communicator&)>& body) {
  auto comms = make_cpu_communicators(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back([&, r] { body(*comms[r]); });
  for (auto& t : threads) t.join();
}

class Ranks : public ::testing::TestWithParam<int> {};

TEST_P(Ranks, AllReduceSumsEveryRanksValues) {
  const int world = GetParam();
  std::vector<std::vector<float>> results(world);
  run_ranks(world, [&](Communicator& c) {
    EXPECT_EQ(c.world_size(), world);
    std::vector<float> data(37);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>((c.rank() + 1) * 100 + i);
    ASSERT_TRUE(c.all_reduce_sum(data).ok());
    results[c.rank()] = data;
  });
  for (int r = 0; r < world; ++r) {
    for (size_t i = 0; i < 37; ++i) {
      float expected = 0;
      for (int q = 0; q < world; ++q) expected += static_cast<float>((q + 1) * 100 + i);
      EXPECT_EQ(results[r][i], expected) << "rank " << r << " element " << i;
    }
  }
}

TEST_P(Ranks, AllGatherConcatenatesInRankOrder) {
  const int world = GetParam();
  run_ranks(world, [&](Communicator& c) {
    std::vector<float> send = {static_cast<float>(c.rank()), static_cast<float>(c.rank() * 10), -1.5f};
    std::vector<float> recv(send.size() * world, 0.0f);
    ASSERT_TRUE(c.all_gather(std::span<const float>(send), std::span<float>(recv)).ok());
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(recv[3 * r], static_cast<float>(r));
      EXPECT_EQ(recv[3 * r + 1], static_cast<float>(r * 10));
      EXPECT_EQ(recv[3 * r + 2], -1.5f);
    }
  });
}

TEST_P(Ranks, BroadcastCopiesTheRootsBuffer) {
  const int world = GetParam();
  for (int root = 0; root < world; ++root) {
    run_ranks(world, [&](Communicator& c) {
      std::vector<int32_t> data(5, c.rank() == root ? 42 + root : -7);
      ASSERT_TRUE(c.broadcast(std::span<int32_t>(data), root).ok());
      for (int32_t v : data) EXPECT_EQ(v, 42 + root);
    });
  }
}

// Many rounds of every collective with sizes that change per round (the same on every rank): nothing
// deadlocks, and each round's values are right, including empty buffers and sizes below world.
TEST_P(Ranks, ManyMixedRoundsFinish) {
  const int world = GetParam();
  run_ranks(world, [&](Communicator& c) {
    std::mt19937 sizes(7);  // same sequence on every rank
    for (int round = 0; round < 500; ++round) {
      const size_t n = sizes() % 300;
      std::vector<float> data(n, static_cast<float>(c.rank() + round));
      ASSERT_TRUE(c.all_reduce_sum(data).ok());
      const float expected = static_cast<float>(world * round + world * (world - 1) / 2);
      for (float v : data) ASSERT_EQ(v, expected);
      std::vector<float> recv(n * world);
      ASSERT_TRUE(c.all_gather(std::span<const float>(data), std::span<float>(recv)).ok());
      std::vector<float> b(n % 7, static_cast<float>(c.rank()));
      ASSERT_TRUE(c.broadcast(std::span<float>(b), round % world).ok());
      for (float v : b) ASSERT_EQ(v, static_cast<float>(round % world));
    }
  });
}

INSTANTIATE_TEST_SUITE_P(World, Ranks, ::testing::Values(1, 2, 3, 4));

// Values whose float sum depends on the order of the additions: every rank gets the same bits, and
// repeated runs (other thread timings) give the same bits again.
TEST(CpuCommunicator, SumsAreDeterministicAcrossRunsAndRanks) {
  const int world = 4;
  std::vector<uint32_t> first;
  for (int run = 0; run < 20; ++run) {
    std::vector<std::vector<float>> results(world);
    run_ranks(world, [&](Communicator& c) {
      std::mt19937 gen(1234 + c.rank());
      std::uniform_real_distribution<float> dist(-1e6f, 1e6f);
      std::vector<float> data(1000);
      for (float& v : data) v = dist(gen) * (c.rank() % 2 ? 1e-6f : 1.0f);
      if (c.rank() == run % world) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ASSERT_TRUE(c.all_reduce_sum(data).ok());
      results[c.rank()] = data;
    });
    std::vector<uint32_t> bits(results[0].size());
    std::memcpy(bits.data(), results[0].data(), bits.size() * sizeof(float));
    for (int r = 1; r < world; ++r) ASSERT_EQ(std::memcmp(results[r].data(), results[0].data(), bits.size() * 4), 0);
    if (run == 0) first = bits;
    ASSERT_EQ(bits, first) << "run " << run;
  }
}

TEST(CpuCommunicator, AbortReleasesRanksWaitingInACollective) {
  const int world = 3;
  std::vector<Status> results(world);
  run_ranks(world, [&](Communicator& c) {
    std::vector<float> data(10, 1.0f);
    if (c.rank() == 2) {
      // This rank fails before its collective; the others are already waiting in theirs.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      c.abort(Status::Internal("rank 2 failed"));
      results[2] = Status::Internal("rank 2 failed");
      return;
    }
    results[c.rank()] = c.all_reduce_sum(data);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].code(), StatusCode::kInternal);
    EXPECT_EQ(results[r].message(), "rank 2 failed");
  }
}

TEST(CpuCommunicator, AFailedGroupStaysFailed) {
  auto comms = make_cpu_communicators(2);
  comms[1]->abort(Status::Internal("boom"));
  std::vector<float> data(4);
  std::vector<float> recv(8);
  EXPECT_EQ(comms[0]->all_reduce_sum(data).message(), "boom");
  EXPECT_EQ(comms[0]->all_gather(std::span<const float>(data), std::span<float>(recv)).message(), "boom");
  EXPECT_EQ(comms[1]->broadcast(std::span<float>(data), 0).message(), "boom");
}

TEST(CpuCommunicator, MismatchedSizesFailEveryRank) {
  const int world = 2;
  std::vector<Status> results(world);
  run_ranks(world, [&](Communicator& c) {
    std::vector<float> data(c.rank() == 0 ? 4 : 5);
    results[c.rank()] = c.all_reduce_sum(data);
  });
  for (const Status& s : results) EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
}

TEST(CpuCommunicator, WrongGatherBufferIsRefused) {
  auto comms = make_cpu_communicators(1);
  std::vector<float> send(3), recv(2);
  EXPECT_EQ(comms[0]->all_gather(std::span<const float>(send), std::span<float>(recv)).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem::parallel
