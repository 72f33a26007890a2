// Migration at the request lifecycle (issue 22) over a fake directory: what a stream that loses its
// decode worker mid-stream sends to the next one (the prompt plus the tokens the client has, marked as
// resumed, with max_tokens and min_tokens lowered), that the client's stream goes on without an error
// and without repeats, and where migration stops (the limit, n > 1, before the first token).
#include <gtest/gtest.h>

#include "fakes.h"

namespace tandem::frontend {
namespace {

class MigrationTest : public testing::LifecycleFixture<> {
 protected:
  static rpc::pb::Output output(const std::string& id, std::vector<int32_t> tokens, const std::string& text,
                                rpc::pb::FinishReason finish = rpc::pb::FINISH_NONE) {
    rpc::pb::Output out;
    out.set_request_id(id);
    for (int32_t t : tokens) out.add_token_ids(t);
    out.set_text(text);
    if (finish != rpc::pb::FINISH_NONE) {
      out.set_finished(true);
      out.set_finish_reason(finish);
    }
    return out;
  }
  // The worker whose last message was this request's Generate.
  WorkerKey holder(const std::vector<WorkerKey>& keys, const std::string& id) {
    for (WorkerKey k : keys) {
      const auto& sent = directory_.workers[k].sent;
      if (!sent.empty() && sent.back().has_generate() && sent.back().generate().request_id() == id) return k;
    }
    return 0;
  }
  std::string text_of(const testing::FakeExchange& ex) {
    std::string text;
    for (size_t i = 0; i < ex.events.size(); ++i) {
      if (ex.events[i] == "data: [DONE]\n\n") continue;
      const auto e = ex.event(i);
      if (e.contains("choices") && !e["choices"].empty()) text += e["choices"][0].value("text", "");
    }
    return text;
  }
};

TEST_F(MigrationTest, ALostWorkersStreamContinuesOnAnotherWithThePromptPlusItsTokens) {
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2,3],"max_tokens":10,"min_tokens":4,"stream":true,"seed":9,"temperature":0.7})");
  const WorkerKey first = directory_.workers[a].sent.empty() ? b : a;
  const std::string id = directory_.last_sent(first).generate().request_id();
  const WorkerKey second = first == a ? b : a;
  lifecycle().on_output(first, output(id, {40, 41}, "xy"));
  lifecycle().on_output(first, output(id, {42}, ""));  // its text held back by the worker
  lifecycle().on_worker_lost(first, "a", Status::Unavailable("connection reset"), {id});

  ASSERT_EQ(holder({second}, id), second);
  const rpc::pb::Generate& g = directory_.last_sent(second).generate();
  EXPECT_EQ(std::vector<int32_t>(g.prompt_token_ids().begin(), g.prompt_token_ids().end()),
            (std::vector<int32_t>{1, 2, 3, 40, 41, 42}));
  EXPECT_EQ(g.num_resumed_tokens(), 3);
  EXPECT_EQ(g.resumed_text_bytes(), 2);
  EXPECT_EQ(g.sampling().max_tokens(), 7);
  EXPECT_EQ(g.sampling().min_tokens(), 1);
  EXPECT_EQ(g.sampling().seed(), 9u);
  EXPECT_EQ(directory_.workers[second].outstanding, 1);
  EXPECT_EQ(metrics_.get("tandem_requests_migrated_total", labels({{"reason", "worker_lost"}})), 1);

  // The new worker streams the held-back text and goes on; the client sees one stream.
  lifecycle().on_output(second, output(id, {43}, "zw"));
  lifecycle().on_output(second, output(id, {44}, "v", rpc::pb::FINISH_LENGTH));
  EXPECT_EQ(text_of(*ex), "xyzwv");
  for (size_t i = 0; i < ex->events.size(); ++i) {
    if (ex->events[i] != "data: [DONE]\n\n") {
      EXPECT_FALSE(ex->event(i).contains("error")) << ex->events[i];
    }
  }
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
  EXPECT_EQ(metrics_.get("tandem_requests_failed_total", labels({{"status", "503"}})), 0);
}

TEST_F(MigrationTest, AWorkerErrorOrAbortMidStreamMovesItAndTheLimitStopsIt) {
  options_.migration_limit = 2;
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"max_tokens":10,"stream":true})");
  WorkerKey on = directory_.workers[a].sent.empty() ? b : a;
  const std::string id = directory_.last_sent(on).generate().request_id();
  lifecycle().on_output(on, output(id, {5}, "a"));
  rpc::pb::Output failed = output(id, {}, "", rpc::pb::FINISH_ERROR);
  failed.set_error_code(static_cast<int32_t>(StatusCode::kInternal));
  lifecycle().on_output(on, failed);
  on = on == a ? b : a;  // the only other worker
  ASSERT_EQ(holder({on}, id), on);
  EXPECT_EQ(directory_.last_sent(on).generate().num_resumed_tokens(), 1);
  lifecycle().on_output(on, output(id, {6}, "b"));
  lifecycle().on_output(on, output(id, {}, "", rpc::pb::FINISH_ABORT));  // its drain gave it up
  on = on == a ? b : a;
  ASSERT_EQ(holder({on}, id), on);
  EXPECT_EQ(directory_.last_sent(on).generate().num_resumed_tokens(), 2);
  EXPECT_EQ(metrics_.get("tandem_requests_migrated_total", labels({{"reason", "worker_aborted"}})), 1);
  // The third loss is past the limit: the stream ends with its error event, as without migration.
  lifecycle().on_worker_lost(on, "x", Status::Unavailable("gone"), {id});
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_TRUE(ex->event(ex->events.size() - 2).contains("error"));
}

TEST_F(MigrationTest, NothingMovesBeforeTheFirstTokenOrWithSeveralChoices) {
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"max_tokens":5,"n":2,"stream":true})");
  const std::string id = directory_.last_sent(a).generate().request_id();
  directory_.add("b", rpc::pb::ROLE_BOTH);
  auto out = output(id, {7}, "q");
  lifecycle().on_output(a, out);
  lifecycle().on_worker_lost(a, "a", Status::Unavailable("gone"), {id});
  EXPECT_EQ(lifecycle().num_active(), 0u);  // failed: two choices do not move
  EXPECT_EQ(metrics_.get("tandem_requests_migrated_total", labels({{"reason", "worker_lost"}})), 0);
}

}  // namespace
}  // namespace tandem::frontend
