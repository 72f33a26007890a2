// KvReservationGuard: the blocks reserved for a remote prefill are released on every exit but the one
// that hands them to the engine, and the reservation counter follows.
#include "worker/kv_reservation.h"

#include <gtest/gtest.h>

#include <optional>

#include "engine/fake_engine.h"

namespace tandem::worker {
namespace {

class KvReservationGuardTest : public ::testing::Test {
 protected:
  KvReservationGuardTest() {
    engine::FakeEngineOptions options;
    options.num_blocks = 64;
    options.block_size = 16;
    engine_ = engine::create_fake_engine(options);
  }
  int used() const { return engine_->stats().num_kv_blocks_used; }
  StatusOr<KvReservationGuard> reserve(const std::string& id, int num_tokens) {
    return KvReservationGuard::reserve(*engine_, id, std::vector<int32_t>(num_tokens, 7), held_);
  }

  std::unique_ptr<engine::Engine> engine_;
  std::atomic<int> held_{0};
};

TEST_F(KvReservationGuardTest, ScopeExit_ReleasesTheBlocks) {
  {
    auto guard = reserve("a", 40);  // 3 blocks of 16
    ASSERT_TRUE(guard.ok()) << guard.status().message();
    EXPECT_TRUE(guard->held());
    EXPECT_EQ(guard->reservation().block_ids.size(), 3u);
    EXPECT_EQ(used(), 3);
    EXPECT_EQ(held_.load(), 1);
  }
  EXPECT_EQ(used(), 0);
  EXPECT_EQ(held_.load(), 0);
}

TEST_F(KvReservationGuardTest, EarlyReturnOnEveryPath_ReleasesTheBlocks) {
  // The shape of a remote prefill's fall-back exits: each returns with the guard in scope.
  auto attempt = [&](int exit_at) -> std::string {
    auto guard = reserve("b", 20);
    if (!guard.ok()) return "reserve_failed";
    if (exit_at == 0) return "unreachable";
    if (exit_at == 1) return "timeout";
    guard->hand_to_engine();
    return "decode";
  };
  for (int exit_at = 0; exit_at < 2; ++exit_at) {
    EXPECT_NE(attempt(exit_at), "decode");
    EXPECT_EQ(used(), 0) << "exit " << exit_at;
    EXPECT_EQ(held_.load(), 0) << "exit " << exit_at;
  }
}

TEST_F(KvReservationGuardTest, HandToEngine_KeepsTheBlocksForTheEngine) {
  {
    auto guard = reserve("c", 33);  // 3 blocks
    ASSERT_TRUE(guard.ok());
    guard->hand_to_engine();
    EXPECT_FALSE(guard->held());
    EXPECT_EQ(held_.load(), 0);
  }
  EXPECT_EQ(used(), 3) << "the guard released blocks it had handed over";
  engine_->release_blocks("c");  // what the engine does once the request ends
  EXPECT_EQ(used(), 0);
}

TEST_F(KvReservationGuardTest, ReleaseIsIdempotent) {
  auto guard = reserve("d", 16);
  ASSERT_TRUE(guard.ok());
  guard->release();
  guard->release();
  guard->hand_to_engine();
  EXPECT_EQ(used(), 0);
  EXPECT_EQ(held_.load(), 0);
}

TEST_F(KvReservationGuardTest, Move_TransfersOwnershipOnce) {
  std::optional<KvReservationGuard> outer;
  {
    auto guard = reserve("e", 16);
    ASSERT_TRUE(guard.ok());
    outer.emplace(std::move(*guard));
    EXPECT_FALSE(guard->held());
  }
  EXPECT_EQ(used(), 1) << "the moved-from guard released the blocks";
  EXPECT_EQ(held_.load(), 1);
  auto other = reserve("f", 16);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(used(), 2);
  *outer = std::move(*other);  // the assigned-to guard lets go of "e" first
  EXPECT_EQ(used(), 1);
  EXPECT_EQ(held_.load(), 1);
  outer.reset();
  EXPECT_EQ(used(), 0);
  EXPECT_EQ(held_.load(), 0);
}

TEST_F(KvReservationGuardTest, ReserveFailure_HoldsNothing) {
  auto guard = reserve("g", 65 * 16);  // more than the pool
  ASSERT_FALSE(guard.ok());
  EXPECT_EQ(guard.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(held_.load(), 0);
  EXPECT_EQ(used(), 0);
}

}  // namespace
}  // namespace tandem::worker
