// The life of a request at the frontend against a fake worker directory: what is sent to which
// worker, what the client sees, and what the directory is left holding after every kind of end
// (complete, worker error, worker lost, timeout, client gone).
#include <gtest/gtest.h>

#include "fakes.h"
#include "frontend/request_lifecycle.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;
using testing::ByteCodec;
using testing::FakeDirectory;
using testing::FakeExchange;

class RequestLifecycleTest : public testing::LifecycleFixture<> {
 protected:
  RequestLifecycleTest() { options_.request_timeout_ms = 1000; }

  // The request id the worker was sent last.
  std::string sent_request_id(WorkerKey worker) { return directory_.last_sent(worker).generate().request_id(); }
  static rpc::pb::Output output(const std::string& id, std::vector<int32_t> tokens, const std::string& text,
                                bool finished = false) {
    rpc::pb::Output out;
    out.set_request_id(id);
    for (int32_t t : tokens) out.add_token_ids(t);
    out.set_text(text);
    if (finished) {
      out.set_finished(true);
      out.set_finish_reason(rpc::pb::FINISH_STOP);
    }
    return out;
  }
  static rpc::pb::Output worker_error(const std::string& id, StatusCode code, const std::string& message) {
    rpc::pb::Output out;
    out.set_request_id(id);
    out.set_finished(true);
    out.set_finish_reason(rpc::pb::FINISH_ERROR);
    out.set_error_code(static_cast<int32_t>(code));
    out.set_error_message(message);
    return out;
  }

};

TEST_F(RequestLifecycleTest, CompletionIsSentToTheDecodeWorkerAndAnsweredWhole) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH, /*max_model_len=*/100);
  auto ex = start(R"({"prompt":[5,6,7]})");
  ASSERT_EQ(directory_.workers[w].sent.size(), 1u);
  const auto& g = directory_.last_sent(w).generate();
  EXPECT_EQ(std::vector<int32_t>(g.prompt_token_ids().begin(), g.prompt_token_ids().end()), (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(g.sampling().max_tokens(), 16);  // completions without max_tokens: min(room, 16)
  EXPECT_TRUE(g.remote_prefill_address().empty());
  EXPECT_EQ(directory_.workers[w].outstanding, 1);
  EXPECT_EQ(directory_.workers[w].prompts_noted, 1);
  EXPECT_EQ(lifecycle().num_active(), 1u);

  lifecycle().on_output(w, output(g.request_id(), {1, 2}, "ab"));
  lifecycle().on_output(w, output(g.request_id(), {3}, "c", /*finished=*/true));
  EXPECT_EQ(ex->status, 200);
  const json body = ex->json_body();
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["id"], "cmpl-" + g.request_id());
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["choices"][0]["text"], "abc");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"], json({{"prompt_tokens", 3}, {"completion_tokens", 3}, {"total_tokens", 6}}));
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[w].outstanding, 0);
  EXPECT_EQ(metrics_.get("vllm:generation_tokens_total"), 3);
}

TEST_F(RequestLifecycleTest, ChatStreamsRoleDeltaContentUsageAndDone) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_DECODE);
  auto ex = start(R"({"messages":[{"role":"user","content":"hi"}],"stream":true,
                      "stream_options":{"include_usage":true}})",
                  /*chat=*/true);
  const std::string id = sent_request_id(w);
  EXPECT_EQ(directory_.last_sent(w).generate().sampling().max_tokens(), 1024);  // chat: default_max_tokens
  ASSERT_EQ(ex->events.size(), 1u);
  EXPECT_EQ(ex->event(0)["choices"][0]["delta"], json({{"role", "assistant"}, {"content", ""}}));
  lifecycle().on_output(w, output(id, {7}, "yo", /*finished=*/true));
  ASSERT_EQ(ex->events.size(), 4u);
  EXPECT_EQ(ex->event(1)["object"], "chat.completion.chunk");
  EXPECT_EQ(ex->event(1)["choices"][0]["delta"], json({{"content", "yo"}}));
  EXPECT_EQ(ex->event(1)["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(ex->event(2)["choices"], json::array());
  EXPECT_EQ(ex->event(2)["usage"]["total_tokens"], 3);
  EXPECT_EQ(ex->events[3], "data: [DONE]\n\n");
  EXPECT_TRUE(ex->ended);
}

TEST_F(RequestLifecycleTest, LongPromptGoesToThePrefillWorkerAndHoldsAQueueSlotUntilItsFirstOutput) {
  router_.max_local_prefill = 2;
  const WorkerKey d = directory_.add("d", rpc::pb::ROLE_DECODE);
  const WorkerKey p = directory_.add("p", rpc::pb::ROLE_PREFILL);
  auto ex = start(R"({"prompt":[1,2,3,4,5],"max_tokens":4})");
  const auto& g = directory_.last_sent(d).generate();
  EXPECT_EQ(g.remote_prefill_address(), "p:1");
  EXPECT_EQ(g.remote_prefill_timeout_ms(), options_.remote_prefill_timeout_ms);
  EXPECT_EQ(directory_.prefills_held, 1);
  EXPECT_EQ(directory_.workers[p].prefills_held, 1);
  EXPECT_EQ(metrics_.get("tandem_router_decisions_total", labels({{"decision", "remote"}, {"reason", "long_prompt"}})), 1);
  lifecycle().on_output(d, output(g.request_id(), {9}, "x"));
  EXPECT_EQ(directory_.prefills_held, 0);
  EXPECT_EQ(directory_.workers[p].prefills_held, 0);
}

TEST_F(RequestLifecycleTest, UnreachablePrefillQueueMeansLocalPrefill) {
  router_.max_local_prefill = 2;
  directory_.remote_prefill_up = false;
  const WorkerKey d = directory_.add("d", rpc::pb::ROLE_DECODE);
  directory_.add("p", rpc::pb::ROLE_PREFILL);
  start(R"({"prompt":[1,2,3,4,5],"max_tokens":4})");
  EXPECT_TRUE(directory_.last_sent(d).generate().remote_prefill_address().empty());
  EXPECT_EQ(directory_.prefills_held, 0);
  EXPECT_EQ(metrics_.get("tandem_router_decisions_total",
                         labels({{"decision", "local"}, {"reason", "prefill_queue_unavailable"}})),
            1);
}

TEST_F(RequestLifecycleTest, WorkerRefusalBeforeTheFirstTokenIsReroutedOnceWithLocalPrefill) {
  router_.max_local_prefill = 2;
  const WorkerKey a = directory_.add("a", rpc::pb::ROLE_DECODE);
  const WorkerKey b = directory_.add("b", rpc::pb::ROLE_DECODE);
  directory_.add("p", rpc::pb::ROLE_PREFILL);
  auto ex = start(R"({"prompt":[1,2,3,4,5],"max_tokens":4})");
  const WorkerKey first = directory_.workers[a].sent.empty() ? b : a;
  const WorkerKey second = first == a ? b : a;
  const std::string id = sent_request_id(first);
  ASSERT_EQ(directory_.prefills_held, 1);

  lifecycle().on_output(first, worker_error(id, StatusCode::kUnavailable, "draining"));
  ASSERT_EQ(directory_.workers[second].sent.size(), 1u);
  const auto& g = directory_.last_sent(second).generate();
  EXPECT_EQ(g.request_id(), id);
  EXPECT_TRUE(g.remote_prefill_address().empty());
  EXPECT_EQ(directory_.prefills_held, 0);
  EXPECT_EQ(directory_.workers[first].outstanding, 0);
  EXPECT_EQ(directory_.workers[second].outstanding, 1);
  EXPECT_EQ(ex->status, 0);  // the client has seen nothing yet
  EXPECT_EQ(metrics_.get("tandem_requests_rerouted_total", labels({{"reason", "worker_error"}})), 1);

  // Outputs of the first worker no longer count; a second refusal is the client's error.
  lifecycle().on_output(first, output(id, {1}, "z", true));
  EXPECT_EQ(ex->status, 0);
  lifecycle().on_output(second, worker_error(id, StatusCode::kUnavailable, "draining too"));
  EXPECT_EQ(ex->status, 503);
  EXPECT_EQ(ex->json_body()["error"]["message"], "draining too");
  EXPECT_EQ(directory_.workers[second].outstanding, 0);
}

TEST_F(RequestLifecycleTest, LostWorkerFailsItsRequestsWhenNoOtherCanTakeThem) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"stream":true})");
  const std::string id = sent_request_id(w);
  lifecycle().on_output(w, output(id, {3}, "c"));
  lifecycle().on_worker_lost(w, "w1", Status::Unavailable("connection reset"), {id});
  ASSERT_EQ(ex->events.size(), 3u);
  EXPECT_EQ(ex->event(1)["error"]["message"], "decode worker w1 lost: connection reset");
  EXPECT_EQ(ex->event(1)["error"]["code"], 503);
  EXPECT_EQ(ex->events[2], "data: [DONE]\n\n");
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.workers[w].sent.size(), 1u);  // no abort to a worker that is gone
  EXPECT_EQ(metrics_.get("tandem_requests_failed_total", labels({{"status", "503"}})), 1);
}

TEST_F(RequestLifecycleTest, LostPrefillWorkerReleasesTheSlotsHeldOnIt) {
  router_.max_local_prefill = 2;
  const WorkerKey d = directory_.add("d", rpc::pb::ROLE_DECODE);
  const WorkerKey p = directory_.add("p", rpc::pb::ROLE_PREFILL);
  start(R"({"prompt":[1,2,3,4,5],"max_tokens":4})");
  ASSERT_EQ(directory_.prefills_held, 1);
  lifecycle().on_worker_lost(p, "p", Status::Unavailable("gone"), {});
  EXPECT_EQ(directory_.prefills_held, 0);
  EXPECT_EQ(lifecycle().num_active(), 1u);  // its decode worker falls back to a local prefill
  EXPECT_EQ(directory_.workers[d].outstanding, 1);
}

TEST_F(RequestLifecycleTest, StalledRequestTimesOutAndIsAbortedOnItsWorker) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2]})");
  const std::string id = sent_request_id(w);
  lifecycle().expire_stalled(Clock::now());
  EXPECT_EQ(ex->status, 0);
  lifecycle().expire_stalled(Clock::now() + std::chrono::milliseconds(options_.request_timeout_ms + 1));
  EXPECT_EQ(ex->status, 504);
  EXPECT_EQ(ex->json_body()["error"]["type"], "timeout_error");
  ASSERT_EQ(directory_.workers[w].sent.size(), 2u);
  EXPECT_EQ(directory_.last_sent(w).abort().request_id(), id);
  EXPECT_EQ(directory_.workers[w].outstanding, 0);
}

TEST_F(RequestLifecycleTest, ClientLeavingAbortsTheRequestOnItsWorker) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = start(R"({"prompt":[1,2],"stream":true})");
  const std::string id = sent_request_id(w);
  ex->leave();
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(directory_.last_sent(w).abort().request_id(), id);
  EXPECT_EQ(directory_.workers[w].outstanding, 0);
  EXPECT_EQ(metrics_.get("tandem_client_disconnects_total"), 1);
}

TEST_F(RequestLifecycleTest, RefusalsAnsweredAtOnce) {
  // No worker.
  EXPECT_EQ(start(R"({"prompt":[1]})")->status, 503);
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH, /*max_model_len=*/8, /*vocab_size=*/50);
  auto unknown = start(R"({"prompt":[1],"model":"other"})");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(unknown->json_body()["error"]["param"], "model");
  auto vocab = start(R"({"prompt":[1,60]})");
  EXPECT_EQ(vocab->status, 400);
  EXPECT_EQ(vocab->json_body()["error"]["message"], "token id 60 is outside the vocabulary (size 50)");
  auto context = start(R"({"prompt":[1,2,3,4,5,6,7,8]})");
  EXPECT_EQ(context->status, 413);
  EXPECT_EQ(context->json_body()["error"]["param"], "prompt");
  auto room = start(R"({"prompt":[1,2],"max_tokens":7})");
  EXPECT_EQ(room->status, 400);
  EXPECT_EQ(room->json_body()["error"]["param"], "max_tokens");
  EXPECT_EQ(start(R"({"prompt":""})")->status, 400);
  EXPECT_TRUE(directory_.workers[w].sent.empty());
  directory_.workers[w].accepts = false;
  auto gone = start(R"({"prompt":[1]})");
  EXPECT_EQ(gone->status, 503);
  EXPECT_EQ(gone->json_body()["error"]["message"], "decode worker w1 is gone");
  lifecycle().set_draining();
  auto draining = start(R"({"prompt":[1]})");
  EXPECT_EQ(draining->status, 503);
  EXPECT_EQ(draining->json_body()["error"]["message"], "the server is draining");
  EXPECT_EQ(lifecycle().num_active(), 0u);
  EXPECT_EQ(metrics_.get("tandem_http_errors_total", labels({{"status", "503"}})), 3);
}

TEST_F(RequestLifecycleTest, RequestIdFollowsXRequestId) {
  const WorkerKey w = directory_.add("w1", rpc::pb::ROLE_BOTH);
  auto ex = std::make_shared<FakeExchange>(R"({"prompt":[1]})");
  ex->request_.headers["x-request-id"] = "abc";
  lifecycle().start(ex, false);
  EXPECT_EQ(sent_request_id(w).rfind("abc-", 0), 0u);
  lifecycle().on_output(w, output(sent_request_id(w), {2}, "b", true));
  ASSERT_EQ(ex->headers.size(), 1u);
  EXPECT_EQ(ex->headers[0], (std::pair<std::string, std::string>{"X-Request-Id", "abc"}));
}

}  // namespace
}  // namespace tandem::frontend
