// The embedded worker directory over real request-plane connections: a worker registers on the
// registry port and becomes routable; the load the router sees is what was assigned here; outputs
// and the end of a connection reach the request lifecycle as DirectoryEvents.
#include <gtest/gtest.h>

#include <deque>
#include <mutex>

#include "frontend/post_gate.h"
#include "frontend/worker_directory.h"
#include "rpc/connection.h"

namespace tandem::frontend {
namespace {

// Runs posted work on the test's thread, when the test pumps it.
class QueueExecutor : public Executor {
 public:
  void post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
  }
  void post_after(int, std::function<void()> fn) override { post(std::move(fn)); }
  // Runs posted work until `done()` or 5 s; returns done().
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

// A worker's end of the request plane: what the frontend sends it is kept.
struct WorkerEnd {
  std::shared_ptr<rpc::Connection> conn;
  std::mutex mu;
  std::vector<rpc::pb::Envelope> received;

  ~WorkerEnd() {
    if (!conn) return;
    conn->close();
    conn->wait_closed(std::chrono::seconds(2));
  }
  void connect(uint16_t port) {
    auto dialed = rpc::Connection::dial("127.0.0.1:" + std::to_string(port), 1000);
    ASSERT_TRUE(dialed.ok()) << dialed.status().message();
    conn = *dialed;
    conn->start(
        [this](rpc::pb::Envelope& env) {
          std::lock_guard<std::mutex> lock(mu);
          received.push_back(env);
        },
        [](const Status&) {});
  }
  void register_as(const std::string& id, rpc::pb::Role role) {
    rpc::pb::Envelope env;
    auto* r = env.mutable_register_();
    r->set_worker_id(id);
    r->set_role(role);
    r->set_model("m");
    r->set_rpc_address(id + ":9");
    r->set_block_size(4);
    r->set_max_model_len(100);
    conn->send(env);
  }
  size_t num_received() {
    std::lock_guard<std::mutex> lock(mu);
    return received.size();
  }
};

class EmbeddedDirectoryTest : public ::testing::Test {
 protected:
  EmbeddedDirectoryTest() {
    gate_->io = &io_;
    directory_ = make_worker_directory(DirectoryOptions{}, gate_);
    DirectoryEvents events;
    events.output = [this](WorkerKey worker, const rpc::pb::Output& out) { outputs_.emplace_back(worker, out); };
    events.worker_lost = [this](WorkerKey worker, const std::string& name, const Status&,
                                const std::vector<std::string>& requests) { lost_.push_back({worker, name, requests}); };
    directory_->set_events(std::move(events));
    directory_->start();
  }
  ~EmbeddedDirectoryTest() override {
    directory_->stop_threads();
    gate_->close();
    directory_->shutdown();
  }
  int num_workers() {
    int n = 0;
    directory_->for_each_worker([&](const WorkerView& w) { n += w.registered; });
    return n;
  }
  WorkerKey key_of(const std::string& id) {
    WorkerKey key = 0;
    directory_->for_each_worker([&](const WorkerView& w) {
      if (w.info->worker_id() == id) key = w.key;
    });
    return key;
  }

  struct Lost {
    WorkerKey worker;
    std::string name;
    std::vector<std::string> requests;
  };
  QueueExecutor io_;
  std::shared_ptr<PostGate> gate_ = std::make_shared<PostGate>();
  std::unique_ptr<WorkerDirectory> directory_;
  std::vector<std::pair<WorkerKey, rpc::pb::Output>> outputs_;
  std::vector<Lost> lost_;
};

TEST_F(EmbeddedDirectoryTest, RegisteredWorkerIsRoutableAndCountsWhatWasAssignedHere) {
  EXPECT_EQ(directory_->description(), "embedded");
  EXPECT_FALSE(any_decode_worker(*directory_));
  WorkerEnd worker;
  worker.connect(directory_->registry_port());
  worker.register_as("d1", rpc::pb::ROLE_DECODE);
  ASSERT_TRUE(io_.run_until([&] { return any_decode_worker(*directory_); }));
  ASSERT_TRUE(io_.run_until([&] { return worker.num_received() == 1; }));  // the register ack
  EXPECT_EQ(served_models(*directory_, {}), std::vector<std::string>{"m"});
  EXPECT_EQ(served_models(*directory_, {"alias"}), std::vector<std::string>{"alias"});
  const WorkerKey key = key_of("d1");
  EXPECT_EQ(directory_->info(key)->rpc_address(), "d1:9");

  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_TRUE(directory_->pool("other", prompt, 0).candidates.empty());
  directory_->assign(key, "r1");
  directory_->note_prompt(key, prompt);
  // A heartbeat's load does not count here: this frontend is the only one routing to its workers.
  rpc::pb::Envelope hb;
  hb.mutable_heartbeat()->set_num_running(5);
  worker.conn->send(hb);
  rpc::pb::Envelope out;
  out.mutable_output()->set_request_id("r1");
  worker.conn->send(out);
  ASSERT_TRUE(io_.run_until([&] { return outputs_.size() == 1; }));
  EXPECT_EQ(outputs_[0].first, key);
  EXPECT_EQ(outputs_[0].second.request_id(), "r1");
  RoutingPool pool = directory_->pool("m", prompt, 0);
  ASSERT_EQ(pool.candidates.size(), 1u);
  EXPECT_EQ(pool.keys[0], key);
  EXPECT_TRUE(pool.candidates[0].can_decode);
  EXPECT_EQ(pool.candidates[0].outstanding, 1);
  EXPECT_EQ(pool.candidates[0].overlap_tokens, 8);
  EXPECT_TRUE(directory_->pool("m", prompt, key).candidates.empty());

  rpc::pb::Envelope abort;
  abort.mutable_abort()->set_request_id("r1");
  EXPECT_TRUE(directory_->send(key, abort));
  ASSERT_TRUE(io_.run_until([&] { return worker.num_received() == 2; }));
}

TEST_F(EmbeddedDirectoryTest, RemotePrefillsAreCountedInTheQueueWhileHeld) {
  WorkerEnd prefill;
  prefill.connect(directory_->registry_port());
  prefill.register_as("p1", rpc::pb::ROLE_PREFILL);
  ASSERT_TRUE(io_.run_until([&] { return num_workers() == 1; }));
  const WorkerKey key = key_of("p1");
  rpc::pb::Generate g;
  directory_->address_remote_prefill(key, &g);
  EXPECT_EQ(g.remote_prefill_address(), "p1:9");
  EXPECT_FALSE(g.remote_prefill_queue());

  const WorkerKey slot = directory_->hold_prefill(key);
  EXPECT_EQ(slot, key);
  EXPECT_EQ(directory_->prefill_queue_gauge(), 1);
  RoutingPool pool = directory_->pool("m", std::vector<int32_t>{1}, 0);
  EXPECT_EQ(pool.prefill_queue, 1);
  EXPECT_TRUE(pool.remote_prefill_up);
  ASSERT_EQ(pool.candidates.size(), 1u);
  EXPECT_TRUE(pool.candidates[0].is_prefill);
  EXPECT_EQ(pool.candidates[0].prefills_outstanding, 1);
  directory_->release_prefill(slot);
  EXPECT_EQ(directory_->prefill_queue_gauge(), 0);
  EXPECT_EQ(directory_->pool("m", std::vector<int32_t>{1}, 0).candidates[0].prefills_outstanding, 0);
}

TEST_F(EmbeddedDirectoryTest, DrainingWorkerGetsNothingNewAndALostOneReportsItsRequests) {
  WorkerEnd worker;
  worker.connect(directory_->registry_port());
  worker.register_as("d1", rpc::pb::ROLE_BOTH);
  ASSERT_TRUE(io_.run_until([&] { return any_decode_worker(*directory_); }));
  const WorkerKey key = key_of("d1");
  directory_->assign(key, "r1");
  directory_->assign(key, "r2");
  directory_->unassign(key, "r2");

  rpc::pb::Envelope drain;
  drain.mutable_drain();
  worker.conn->send(drain);
  ASSERT_TRUE(io_.run_until([&] { return !any_decode_worker(*directory_); }));
  EXPECT_TRUE(directory_->pool("m", std::vector<int32_t>{1}, 0).candidates.empty());
  EXPECT_EQ(num_workers(), 1);

  worker.conn->close();
  ASSERT_TRUE(io_.run_until([&] { return !lost_.empty(); }));
  EXPECT_EQ(lost_[0].worker, key);
  EXPECT_EQ(lost_[0].name, "d1");
  EXPECT_EQ(lost_[0].requests, std::vector<std::string>{"r1"});
  EXPECT_EQ(num_workers(), 0);
  EXPECT_EQ(directory_->info(key), nullptr);
  EXPECT_FALSE(directory_->send(key, drain));
}

TEST_F(EmbeddedDirectoryTest, SilentWorkerIsClosedAfterTheHeartbeatTimeout) {
  WorkerEnd worker;
  worker.connect(directory_->registry_port());
  worker.register_as("d1", rpc::pb::ROLE_BOTH);
  ASSERT_TRUE(io_.run_until([&] { return num_workers() == 1; }));
  directory_->tick(Clock::now());
  EXPECT_EQ(num_workers(), 1);
  directory_->tick(Clock::now() + std::chrono::milliseconds(DirectoryOptions{}.heartbeat_timeout_ms + 1));
  ASSERT_TRUE(io_.run_until([&] { return !lost_.empty(); }));
  EXPECT_EQ(num_workers(), 0);
}

}  // namespace
}  // namespace tandem::frontend
