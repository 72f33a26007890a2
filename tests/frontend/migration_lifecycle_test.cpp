// Migration at the request lifecycle (issue 22) over a fake directory: what a stream that loses its
// decode worker mid-stream sends to the next one (the prompt plus the tokens the client has, marked as
// resumed, with max_tokens and min_tokens lowered), that the client's stream goes on without an error
// and without repeats, and where migration stops (the limit, before the first token); a stream of
// several choices goes on with each choice alone, under its own index.
#include <gtest/gtest.h>

#include "fakes.h"

namespace tandem::frontend {
namespace {

class MigrationTest : public testing::LifecycleFixture<> {
 protected:
  static rpc::pb::Output output(const std::string& id, std::vector<int32_t> tokens, const std::string& text,
                                rpc::pb::FinishReason finish = rpc::pb::FINISH_NONE, int index = 0) {
    rpc::pb::Output out;
    out.set_request_id(id);
    out.set_index(index);
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
  std::string text_of(const testing::FakeExchange& ex, int index = 0) {
    std::string text;
    for (size_t i = 0; i < ex.events.size(); ++i) {
      if (ex.events[i] == "data: [DONE]\n\n") continue;
      const auto e = ex.event(i);
      for (const auto& c : e.value("choices", nlohmann::json::array())) {
        if (c.value("index", -1) == index) text += c.value("text", "");
      }
    }
    return text;
  }
  std::vector<int32_t> tokens_of(const testing::FakeExchange& ex, int index) {
    std::vector<int32_t> tokens;
    for (size_t i = 0; i < ex.events.size(); ++i) {
      if (ex.events[i] == "data: [DONE]\n\n") continue;
      for (const auto& c : ex.event(i).value("choices", nlohmann::json::array())) {
        if (c.value("index", -1) != index) continue;
        for (const auto& t : c.value("token_ids", nlohmann::json::array())) tokens.push_back(t.get<int32_t>());
      }
    }
    return tokens;
  }
  int error_events(const testing::FakeExchange& ex) {
    int errors = 0;
    for (size_t i = 0; i < ex.events.size(); ++i) {
      if (ex.events[i] != "data: [DONE]\n\n" && ex.event(i).contains("error")) ++errors;
    }
    return errors;
  }
  static std::vector<int32_t> prompt_of(const rpc::pb::Generate& g) {
    return std::vector<int32_t>(g.prompt_token_ids().begin(), g.prompt_token_ids().end());
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

TEST_F(MigrationTest, SeveralChoicesGoOnEachAloneWithItsOwnTokensAndIndex) {
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2,3],"max_tokens":10,"n":2,"stream":true,"seed":9,"temperature":0.7,
                      "return_token_ids":true})");
  const std::string id = directory_.last_sent(a).generate().request_id();
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_BOTH);
  lifecycle().on_output(a, output(id, {40}, "x", rpc::pb::FINISH_NONE, 0));
  lifecycle().on_output(a, output(id, {50}, "p", rpc::pb::FINISH_NONE, 1));
  lifecycle().on_output(a, output(id, {41}, "", rpc::pb::FINISH_NONE, 0));  // its text held back
  lifecycle().on_output(a, output(id, {51, 52}, "qr", rpc::pb::FINISH_NONE, 1));
  lifecycle().on_worker_lost(a, "a", Status::Unavailable("connection reset"), {id});

  // Each choice goes on alone (n = 1), as its own request at the worker, its draws keyed by its index.
  ASSERT_EQ(directory_.workers[b].sent.size(), 2u);
  const rpc::pb::Generate& g0 = directory_.workers[b].sent[0].generate();
  const rpc::pb::Generate& g1 = directory_.workers[b].sent[1].generate();
  EXPECT_EQ(g0.request_id(), id + "~c0");
  EXPECT_EQ(g1.request_id(), id + "~c1");
  EXPECT_EQ(prompt_of(g0), (std::vector<int32_t>{1, 2, 3, 40, 41}));
  EXPECT_EQ(prompt_of(g1), (std::vector<int32_t>{1, 2, 3, 50, 51, 52}));
  EXPECT_EQ(g0.num_resumed_tokens(), 2);
  EXPECT_EQ(g1.num_resumed_tokens(), 3);
  EXPECT_EQ(g0.resumed_text_bytes(), 1);
  EXPECT_EQ(g1.resumed_text_bytes(), 3);
  EXPECT_EQ(g0.sampling().max_tokens(), 8);
  EXPECT_EQ(g1.sampling().max_tokens(), 7);
  for (const auto* g : {&g0, &g1}) {
    EXPECT_EQ(g->sampling().n(), 1);
    EXPECT_EQ(g->sampling().seed(), 9u);
  }
  EXPECT_EQ(g0.choice_index(), 0);
  EXPECT_EQ(g1.choice_index(), 1);
  EXPECT_EQ(directory_.workers[b].outstanding, 2);
  EXPECT_EQ(directory_.workers[a].outstanding, 0);
  EXPECT_EQ(metrics_.get("tandem_requests_migrated_total", labels({{"reason", "worker_lost"}})), 1);

  // What the lost worker still sends is stale; each new stream's index 0 is its own choice.
  lifecycle().on_output(a, output(id, {99}, "z", rpc::pb::FINISH_NONE, 1));
  lifecycle().on_output(b, output(id + "~c1", {53}, "s", rpc::pb::FINISH_LENGTH));
  lifecycle().on_output(b, output(id + "~c0", {42}, "yz"));
  EXPECT_EQ(directory_.workers[b].outstanding, 1);  // the finished choice's stream is forgotten
  lifecycle().on_output(b, output(id + "~c0", {43}, "w", rpc::pb::FINISH_LENGTH));
  EXPECT_EQ(text_of(*ex, 0), "xyzw");
  EXPECT_EQ(text_of(*ex, 1), "pqrs");
  EXPECT_EQ(tokens_of(*ex, 0), (std::vector<int32_t>{40, 41, 42, 43}));
  EXPECT_EQ(tokens_of(*ex, 1), (std::vector<int32_t>{50, 51, 52, 53}));
  EXPECT_EQ(error_events(*ex), 0);
  EXPECT_EQ(ex->events.back(), "data: [DONE]\n\n");
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[b].outstanding, 0);
}

TEST_F(MigrationTest, AFinishedChoiceStaysAndAMovedChoiceMovesAgainWhenItsWorkerIsLost) {
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"max_tokens":6,"n":2})");
  const std::string id = directory_.last_sent(a).generate().request_id();
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_BOTH);
  lifecycle().on_output(a, output(id, {40}, "x", rpc::pb::FINISH_STOP, 0));
  lifecycle().on_output(a, output(id, {50}, "p", rpc::pb::FINISH_NONE, 1));
  directory_.workers[a].routable = false;  // the directory forgets a lost worker
  lifecycle().on_worker_lost(a, "a", Status::Unavailable("gone"), {id});
  ASSERT_EQ(directory_.workers[b].sent.size(), 1u);  // only the unfinished choice
  EXPECT_EQ(directory_.last_sent(b).generate().request_id(), id + "~c1");
  EXPECT_EQ(directory_.last_sent(b).generate().choice_index(), 1);

  const WorkerKey c = directory_.add("c", rpc::pb::ROLE_BOTH);
  lifecycle().on_output(b, output(id + "~c1", {51}, "q", rpc::pb::FINISH_NONE));
  directory_.workers[b].routable = false;
  lifecycle().on_worker_lost(b, "b", Status::Unavailable("gone"), {id + "~c1"});
  ASSERT_EQ(directory_.workers[c].sent.size(), 1u);
  const rpc::pb::Generate& g = directory_.last_sent(c).generate();
  EXPECT_EQ(g.request_id(), id + "~c1");
  EXPECT_EQ(prompt_of(g), (std::vector<int32_t>{1, 2, 50, 51}));
  EXPECT_EQ(g.num_resumed_tokens(), 2);
  EXPECT_EQ(g.sampling().max_tokens(), 4);
  lifecycle().on_output(c, output(id + "~c1", {52}, "r", rpc::pb::FINISH_STOP));
  ASSERT_EQ(ex->status, 200);
  const auto body = ex->json_body();
  EXPECT_EQ(body["choices"][0]["text"], "x");
  EXPECT_EQ(body["choices"][1]["text"], "pqr");
  EXPECT_EQ(body["choices"][1]["index"], 1);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(metrics_.get("tandem_requests_migrated_total", labels({{"reason", "worker_lost"}})), 2);
}

TEST_F(MigrationTest, ALegLostPastTheLimitFailsTheStreamAndStopsItsOtherLegs) {
  options_.migration_limit = 1;
  router_.mode = RouterMode::kLeastLoaded;  // the choices spread over b and c by their counts
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"max_tokens":6,"n":3,"stream":true})");
  const std::string id = directory_.last_sent(a).generate().request_id();
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_BOTH);
  const WorkerKey c = directory_.add("c", rpc::pb::ROLE_BOTH);
  for (int i = 0; i < 3; ++i) lifecycle().on_output(a, output(id, {10 + i}, "t", rpc::pb::FINISH_NONE, i));
  lifecycle().on_worker_lost(a, "a", Status::Unavailable("gone"), {id});
  ASSERT_EQ(directory_.workers[b].sent.size(), 2u);  // choices 0 and 2
  ASSERT_EQ(directory_.workers[c].sent.size(), 1u);  // choice 1
  EXPECT_EQ(directory_.last_sent(c).generate().request_id(), id + "~c1");
  // Choice 0 ends on b; then c is lost, past the limit: the client gets its error event and b is told
  // to stop choice 2 (not choice 0, which is over).
  lifecycle().on_output(b, output(id + "~c0", {20}, "u", rpc::pb::FINISH_STOP));
  lifecycle().on_worker_lost(c, "c", Status::Unavailable("gone"), {id + "~c1"});
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(error_events(*ex), 1);
  ASSERT_EQ(directory_.workers[b].sent.size(), 3u);
  ASSERT_TRUE(directory_.last_sent(b).has_abort());
  EXPECT_EQ(directory_.last_sent(b).abort().request_id(), id + "~c2");
  EXPECT_EQ(directory_.workers[b].outstanding, 0);
  EXPECT_EQ(directory_.workers[c].outstanding, 0);
}

}  // namespace
}  // namespace tandem::frontend
