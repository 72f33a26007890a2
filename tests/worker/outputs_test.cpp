// Outputs: every output of every request reaches its owner's connection, in the order the engine
// produced it, through the sender thread; errors queue behind what came before them; a request whose
// last output is sent leaves no owner behind.
#include "worker/outputs.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/fake_engine.h"
#include "testing/wait.h"

namespace tandem::worker {
namespace {

using namespace std::chrono_literals;

class OutputsTest : public ::testing::Test {
 protected:
  OutputsTest() {
    core_ = std::make_shared<Core>();
    engine::FakeEngineOptions fake;
    fake.num_blocks = 1024;
    core_->engine = engine::create_fake_engine(fake);
    outputs_ = std::make_shared<Outputs>(core_);
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    owner_ = rpc::Connection::adopt(fds[0], "worker-side");
    owner_->start([](rpc::pb::Envelope&) {}, [](const Status&) {});
    frontend_ = rpc::Connection::adopt(fds[1], "frontend-side");
    frontend_->start(
        [this](rpc::pb::Envelope& env) {
          if (!env.has_output()) return;
          std::lock_guard<std::mutex> lock(mu_);
          received_[env.output().request_id()].push_back(env.output());
        },
        [](const Status&) {});
  }
  ~OutputsTest() override {
    outputs_.reset();
    core_->engine.reset();
    owner_->close();
    frontend_->close();
    owner_->wait_closed(5s);
    frontend_->wait_closed(5s);
  }

  engine::Request request(const std::string& id, int max_tokens) {
    engine::Request r;
    r.request_id = id;
    r.prompt_token_ids = {5, 6, 7, 8};
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    return r;
  }
  size_t num_finished() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& [id, outs] : received_) n += !outs.empty() && outs.back().finished();
    return n;
  }

  std::shared_ptr<Core> core_;
  std::shared_ptr<Outputs> outputs_;
  std::shared_ptr<rpc::Connection> owner_, frontend_;
  std::mutex mu_;
  std::map<std::string, std::vector<rpc::pb::Output>> received_;  // GUARDED_BY(mu_)
};

TEST_F(OutputsTest, EveryRequestsOutputsArriveInOrderAndEndWithOneFinished) {
  constexpr int kRequests = 32, kTokens = 12;
  for (int i = 0; i < kRequests; ++i) {
    const std::string id = "r" + std::to_string(i);
    outputs_->set_owner(id, owner_);
    outputs_->submit(request(id, kTokens), rpc::pb::PrefillInfo{});
  }
  ASSERT_TRUE(testing::wait_until([&] { return num_finished() == kRequests; }));
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(received_.size(), static_cast<size_t>(kRequests));
  for (const auto& [id, outs] : received_) {
    ASSERT_EQ(outs.size(), static_cast<size_t>(kTokens)) << id;
    for (int k = 0; k < kTokens; ++k) {
      EXPECT_EQ(outs[k].num_output_tokens(), k + 1) << id << " output " << k;
      EXPECT_EQ(outs[k].token_ids_size(), 1) << id;
      EXPECT_EQ(outs[k].finished(), k == kTokens - 1) << id << " output " << k;
    }
  }
  EXPECT_TRUE(testing::wait_until([&] { return outputs_->empty(); }));
}

TEST_F(OutputsTest, PrefillInfoRidesOnTheFirstOutputOnly) {
  rpc::pb::PrefillInfo info;
  info.set_present(true);
  info.set_remote(true);
  info.set_kv_bytes(4096);
  outputs_->set_owner("p", owner_);
  outputs_->submit(request("p", 3), info);
  ASSERT_TRUE(testing::wait_until([&] { return num_finished() == 1; }));
  std::lock_guard<std::mutex> lock(mu_);
  const auto& outs = received_["p"];
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_TRUE(outs[0].prefill().present());
  EXPECT_EQ(outs[0].prefill().kv_bytes(), 4096);
  EXPECT_FALSE(outs[1].prefill().present());
  EXPECT_FALSE(outs[2].prefill().present());
}

TEST_F(OutputsTest, AnErrorQueuedAfterOutputsArrivesAfterThemAndForgetsTheOwner) {
  outputs_->set_owner("e", owner_);
  rpc::pb::Output first;
  first.set_request_id("e");
  first.add_token_ids(42);
  outputs_->send("e", first, /*finished=*/false);
  outputs_->send_error("e", Status::Unavailable("draining"), 2);
  ASSERT_TRUE(testing::wait_until([&] {
    std::lock_guard<std::mutex> lock(mu_);
    return received_["e"].size() == 3;
  }));
  EXPECT_TRUE(testing::wait_until([&] { return outputs_->empty(); }));
  std::lock_guard<std::mutex> lock(mu_);
  const auto& outs = received_["e"];
  ASSERT_EQ(outs.size(), 3u);
  EXPECT_EQ(outs[0].token_ids(0), 42);
  EXPECT_EQ(outs[1].finish_reason(), rpc::pb::FINISH_ERROR);
  EXPECT_EQ(outs[1].index(), 0);
  EXPECT_EQ(outs[2].finish_reason(), rpc::pb::FINISH_ERROR);
  EXPECT_EQ(outs[2].index(), 1);
  EXPECT_EQ(outs[2].error_message(), "draining");
}

}  // namespace
}  // namespace tandem::worker
