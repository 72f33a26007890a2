// RemotePrefillClient (the decode side of a remote prefill) over the fake engine and real sockets:
// every way a remote prefill can fail falls back to a local prefill with its reason, an abort while
// waiting ends the request, and on each path the reserved KV blocks come back.
#include "worker/remote_prefill.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/socket.h"
#include "engine/fake_engine.h"
#include "worker/outputs.h"

namespace tandem::worker {
namespace {

using namespace std::chrono_literals;

// A listener standing in for a frontend or a prefill worker: it keeps every message it receives and
// hands each to an optional handler, which may answer on the connection.
class Peer {
 public:
  using Handler = std::function<void(const rpc::pb::Envelope&, const std::shared_ptr<rpc::Connection>&)>;

  explicit Peer(Handler handler = nullptr) : handler_(std::move(handler)) {
    auto bound = net::Listener::bind("127.0.0.1", 0);
    EXPECT_TRUE(bound.ok());
    listener_ = std::move(*bound);
    listener_->start([this](int fd, std::string peer) {
      auto conn = rpc::Connection::adopt(fd, peer);
      std::weak_ptr<rpc::Connection> weak = conn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        conns_.push_back(conn);
      }
      conn->start(
          [this, weak](rpc::pb::Envelope& env) {
            {
              std::lock_guard<std::mutex> lock(mu_);
              received_.push_back(env);
            }
            cv_.notify_all();
            auto c = weak.lock();
            if (handler_ && c) handler_(env, c);
          },
          [](const Status&) {});
    });
  }
  ~Peer() {
    listener_->close();
    std::vector<std::shared_ptr<rpc::Connection>> conns;
    {
      std::lock_guard<std::mutex> lock(mu_);
      conns = conns_;
    }
    for (auto& c : conns) c->close();
    for (auto& c : conns) c->wait_closed(2s);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(listener_->port()); }

  // The first message received that satisfies `pred`, waiting up to `timeout` for it.
  std::optional<rpc::pb::Envelope> wait_for(const std::function<bool(const rpc::pb::Envelope&)>& pred,
                                            std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<rpc::pb::Envelope> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& env : received_) {
        if (pred(env)) {
          found = env;
          return true;
        }
      }
      return false;
    });
    return found;
  }

 private:
  Handler handler_;
  std::unique_ptr<net::Listener> listener_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<rpc::Connection>> conns_;  // GUARDED_BY(mu_)
  std::vector<rpc::pb::Envelope> received_;              // GUARDED_BY(mu_)
};

bool eventually(const std::function<bool()>& f, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (f()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return f();
}

class RemotePrefillClientTest : public ::testing::Test {
 protected:
  RemotePrefillClientTest() {
    core_ = std::make_shared<Core>();
    core_->options.worker_id = "decode-test";
    core_->options.dial_timeout_ms = 1000;
    engine::FakeEngineOptions fake;
    fake.num_blocks = 64;
    fake.block_size = 16;
    core_->engine = engine::create_fake_engine(fake);
    core_->kv_memory = backend_kv_memory(core_->engine->backend());
    core_->transfer = transfer::create_transfer_backend("tcp", core_->kv_memory, "127.0.0.1", 0);
    core_->rpc_address = "127.0.0.1:1";
    outputs_ = std::make_shared<Outputs>(core_);
    client_ = RemotePrefillClient::create(core_, outputs_);
    auto dialed = rpc::Connection::dial(frontend_.address(), 1000);
    EXPECT_TRUE(dialed.ok());
    owner_ = *dialed;
    owner_->start([](rpc::pb::Envelope&) {}, [](const Status&) {});
  }
  ~RemotePrefillClientTest() override {
    owner_->close();
    owner_->wait_closed(2s);
    core_->transfer->shutdown();
  }

  // A 40-token prompt (3 blocks of 16), 4 tokens to generate.
  void start(const std::string& id, const std::string& address, int timeout_ms, int prompt_tokens = 40) {
    engine::Request request;
    request.request_id = id;
    request.prompt_token_ids.assign(prompt_tokens, 11);
    request.sampling.max_tokens = 4;
    request.sampling.stop = {"never"};
    request.sampling.n = 1;
    outputs_->set_owner(id, owner_);
    client_->start(std::move(request), address, timeout_ms);
  }
  std::optional<rpc::pb::Envelope> last_output(const std::string& id) {
    return frontend_.wait_for([&](const rpc::pb::Envelope& env) {
      return env.has_output() && env.output().request_id() == id && env.output().finished();
    });
  }
  std::optional<rpc::pb::Envelope> prefill_info(const std::string& id) {
    return frontend_.wait_for([&](const rpc::pb::Envelope& env) {
      return env.has_output() && env.output().request_id() == id && env.output().prefill().present();
    });
  }
  // Nothing is held any more: no reservation counted, no block in use once the request ended.
  void expect_nothing_held() {
    EXPECT_TRUE(eventually([&] { return core_->engine->stats().num_kv_blocks_used == 0; }))
        << core_->engine->stats().num_kv_blocks_used << " blocks still used";
    EXPECT_EQ(core_->counters.reservations.load(), 0);
    EXPECT_TRUE(client_->idle());
  }
  void expect_fell_back(const std::string& id, const std::string& reason_prefix) {
    auto info = prefill_info(id);
    ASSERT_TRUE(info.has_value()) << "no output carried the prefill info";
    EXPECT_TRUE(info->output().prefill().fell_back());
    EXPECT_EQ(info->output().prefill().fallback_reason().rfind(reason_prefix, 0), 0u)
        << info->output().prefill().fallback_reason();
    auto last = last_output(id);
    ASSERT_TRUE(last.has_value());
    EXPECT_EQ(last->output().finish_reason(), rpc::pb::FINISH_LENGTH) << "the local prefill did not run to the end";
    EXPECT_EQ(core_->counters.fallbacks.load(), 1);
    expect_nothing_held();
  }

  Peer frontend_;
  std::shared_ptr<Core> core_;
  std::shared_ptr<Outputs> outputs_;
  std::shared_ptr<RemotePrefillClient> client_;
  std::shared_ptr<rpc::Connection> owner_;
};

TEST_F(RemotePrefillClientTest, NoQueueConfigured_FallsBackLocally) {
  start("q", /*address=*/"", 1000);
  expect_fell_back("q", "no_prefill_queue: ");
}

TEST_F(RemotePrefillClientTest, PrefillWorkerUnreachable_FallsBackLocally) {
  std::string address;
  {
    Peer gone;  // a port that was just listening and is closed now
    address = gone.address();
  }
  start("u", address, 1000);
  expect_fell_back("u", "prefill_unreachable: ");
}

TEST_F(RemotePrefillClientTest, PrefillWorkerAnswersWithAnError_FallsBackLocally) {
  Peer prefill([](const rpc::pb::Envelope& env, const std::shared_ptr<rpc::Connection>& conn) {
    if (!env.has_remote_prefill()) return;
    rpc::pb::Envelope answer;
    answer.mutable_remote_prefill_result()->set_request_id(env.remote_prefill().request_id());
    answer.mutable_remote_prefill_result()->set_error_code(static_cast<int32_t>(StatusCode::kInternal));
    answer.mutable_remote_prefill_result()->set_error_message("boom");
    conn->send(answer);
  });
  start("e", prefill.address(), 5000);
  expect_fell_back("e", "prefill_failed: boom");
  auto asked = prefill.wait_for([](const rpc::pb::Envelope& env) { return env.has_remote_prefill(); });
  ASSERT_TRUE(asked.has_value());
  const auto& rp = asked->remote_prefill();
  EXPECT_EQ(rp.dest_block_ids_size(), 3);
  EXPECT_EQ(rp.decode_worker_id(), "decode-test");
  EXPECT_EQ(rp.transfer_address(), core_->transfer->address());
  EXPECT_EQ(rp.sampling().max_tokens(), 4);
  EXPECT_EQ(rp.sampling().n(), 1);
  EXPECT_EQ(rp.sampling().stop_size(), 0) << "stop strings stay with the decode worker";
}

TEST_F(RemotePrefillClientTest, NoAnswerBeforeTheDeadline_AbortsThereAndFallsBackLocally) {
  Peer silent;
  start("t", silent.address(), 200);
  expect_fell_back("t", "timeout after 200 ms");
  EXPECT_TRUE(silent.wait_for([](const rpc::pb::Envelope& env) { return env.has_abort() && env.abort().request_id() == "t"; }))
      << "the prefill worker was not told to give up";
}

TEST_F(RemotePrefillClientTest, AbortWhileWaiting_EndsAbortedAndTellsThePrefillWorker) {
  Peer silent;
  start("a", silent.address(), 30000);
  ASSERT_TRUE(silent.wait_for([](const rpc::pb::Envelope& env) { return env.has_remote_prefill(); }));
  EXPECT_EQ(core_->counters.reservations.load(), 1);
  EXPECT_EQ(core_->engine->stats().num_kv_blocks_used, 3);
  EXPECT_TRUE(client_->abort("a"));
  auto last = last_output("a");
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->output().finish_reason(), rpc::pb::FINISH_ABORT);
  EXPECT_TRUE(silent.wait_for([](const rpc::pb::Envelope& env) { return env.has_abort(); }));
  EXPECT_EQ(core_->counters.fallbacks.load(), 0);
  expect_nothing_held();
  EXPECT_FALSE(client_->abort("a")) << "a finished remote prefill is no longer waiting";
}

TEST_F(RemotePrefillClientTest, NoBlocksToReserve_FallsBackLocally) {
  start("r", "127.0.0.1:1", 1000, /*prompt_tokens=*/65 * 16);  // more than the 64-block pool
  auto last = last_output("r");
  ASSERT_TRUE(last.has_value());
  // The local prefill does not fit either: the engine refuses it.
  EXPECT_EQ(last->output().finish_reason(), rpc::pb::FINISH_ERROR);
  EXPECT_EQ(core_->counters.fallbacks.load(), 1);
  expect_nothing_held();
}

}  // namespace
}  // namespace tandem::worker
