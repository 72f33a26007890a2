// Admission at the frontend: the --max-pending-requests limit (admission.h), the request deadline of
// --request-timeout-s and the prompt + max_tokens check against the model's context, on the request
// lifecycle over a fake directory.
#include <gtest/gtest.h>

#include "fakes.h"
#include "frontend/admission.h"
#include "frontend/request_lifecycle.h"

namespace tandem::frontend {
namespace {

using testing::ByteCodec;
using testing::FakeDirectory;
using testing::FakeExchange;

TEST(Admission, RefusesWith429AndRetryAfterAtTheLimit) {
  Metrics metrics;
  Admission admission({/*max_pending_requests=*/2, /*retry_after_s=*/1}, metrics);
  EXPECT_FALSE(admission.admit(0).has_value());
  EXPECT_FALSE(admission.admit(1).has_value());
  auto error = admission.admit(2);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->status, 429);
  auto body = nlohmann::json::parse(error_body(*error));
  EXPECT_EQ(body["error"]["code"], 429);
  EXPECT_EQ(body["error"]["type"], "rate_limit_exceeded");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("--max-pending-requests"), std::string::npos);
  EXPECT_TRUE(admission.admit(5).has_value());
  EXPECT_EQ(metrics.get("tandem_requests_rejected_total", labels({{"reason", "max_pending"}})), 2);
  ASSERT_EQ(admission.rejection_headers().size(), 1u);
  EXPECT_EQ(admission.rejection_headers()[0], (std::pair<std::string, std::string>{"Retry-After", "1"}));
}

TEST(Admission, ZeroMeansNoLimit) {
  Metrics metrics;
  Admission admission({}, metrics);
  EXPECT_FALSE(admission.admit(1000000).has_value());
  EXPECT_EQ(metrics.get("tandem_requests_rejected_total", labels({{"reason", "max_pending"}})), 0);
}

class DeadlineTest : public testing::LifecycleFixture<> {
 protected:
  DeadlineTest() {
    options_.request_timeout_ms = 60000;
    options_.request_deadline_ms = 1000;
  }
  static rpc::pb::Output token(const std::string& id, int32_t t) {
    rpc::pb::Output out;
    out.set_request_id(id);
    out.add_token_ids(t);
    out.set_text("x");
    return out;
  }

};

// A stream that keeps producing tokens is still ended at its deadline: an error event, [DONE], and an
// Abort to its worker, which frees its KV blocks there.
TEST_F(DeadlineTest, StreamPastItsDeadlineEndsWithAnErrorEventAndIsAborted) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = std::make_shared<FakeExchange>(R"({"prompt":[1,2],"stream":true,"max_tokens":100})");
  const auto arrival = Clock::now();
  lifecycle().start(ex, false);
  const std::string id = directory_.last_sent(w).generate().request_id();
  lifecycle().on_output(w, token(id, 5));
  lifecycle().expire_stalled(arrival + std::chrono::milliseconds(500));
  EXPECT_EQ(lifecycle().num_active(), 1u);
  lifecycle().on_output(w, token(id, 6));  // active: the stall timeout alone would not end it
  lifecycle().expire_stalled(Clock::now() + std::chrono::milliseconds(options_.request_deadline_ms + 1));
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_TRUE(ex->ended);
  ASSERT_GE(ex->events.size(), 2u);
  EXPECT_EQ(ex->events.back(), kSseDone);
  const auto error = nlohmann::json::parse(ex->events[ex->events.size() - 2].substr(6));
  EXPECT_EQ(error["error"]["code"], 504);
  EXPECT_NE(error["error"]["message"].get<std::string>().find("deadline"), std::string::npos);
  EXPECT_EQ(directory_.last_sent(w).abort().request_id(), id);
  EXPECT_EQ(directory_.workers[w].outstanding, 0);
}

TEST_F(DeadlineTest, NoDeadlineByDefault) {
  options_.request_deadline_ms = 0;
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = std::make_shared<FakeExchange>(R"({"prompt":[1,2],"stream":true})");
  lifecycle().start(ex, false);
  lifecycle().on_output(w, token(directory_.last_sent(w).generate().request_id(), 5));
  lifecycle().expire_stalled(Clock::now() + std::chrono::milliseconds(30000));
  EXPECT_EQ(lifecycle().num_active(), 1u);
}

// prompt + max_tokens over the model's context: 400 naming both numbers and the context.
TEST_F(DeadlineTest, PromptPlusMaxTokensOverTheContextIs400NamingTheNumbers) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH, /*max_model_len=*/100);
  auto ex = std::make_shared<FakeExchange>(R"({"prompt":[1,2,3,4,5,6,7,8,9,10],"max_tokens":91})");
  lifecycle().start(ex, false);
  EXPECT_EQ(ex->status, 400);
  EXPECT_EQ(ex->json_body()["error"]["param"], "max_tokens");
  const std::string message = ex->json_body()["error"]["message"];
  for (const char* number : {"91", "10", "100"}) EXPECT_NE(message.find(number), std::string::npos) << message;
  EXPECT_TRUE(directory_.workers[w].sent.empty());
  auto fits = std::make_shared<FakeExchange>(R"({"prompt":[1,2,3,4,5,6,7,8,9,10],"max_tokens":90})");
  lifecycle().start(fits, false);
  EXPECT_EQ(fits->status, 0);
  EXPECT_EQ(lifecycle().num_active(), 1u);
}

}  // namespace
}  // namespace tandem::frontend
