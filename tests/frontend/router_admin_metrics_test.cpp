// The router thresholds while serving (router_admin.h) and the scrape-time gauges (serving_metrics.h),
// the latter over a fake worker directory.
#include <gtest/gtest.h>

#include "fakes.h"
#include "frontend/router_admin.h"
#include "frontend/serving_metrics.h"

namespace tandem::frontend {
namespace {

using nlohmann::json;

TEST(RouterAdmin, AppliesNonNegativeIntegersToKnownThresholdsOnly) {
  RouterOptions router;
  EXPECT_TRUE(apply_threshold(router, "max_local_prefill", "64", "admin"));
  EXPECT_EQ(router.max_local_prefill, 64);
  EXPECT_TRUE(apply_threshold(router, "max_prefill_queue", "0", "etcd"));
  EXPECT_EQ(router.max_prefill_queue, 0);
  EXPECT_FALSE(apply_threshold(router, "max_prefill_queue", "-1", "etcd"));
  EXPECT_FALSE(apply_threshold(router, "max_prefill_queue", "3x", "etcd"));
  EXPECT_FALSE(apply_threshold(router, "max_other", "3", "etcd"));
  EXPECT_EQ(router.max_prefill_queue, 0);
  EXPECT_EQ(router.max_local_prefill, 64);
}

TEST(RouterAdmin, ChangesAreParsedAndAdminsChecked) {
  ThresholdChanges changes;
  EXPECT_FALSE(parse_threshold_changes(R"({"max_local_prefill":5,"other":1})", &changes));
  EXPECT_EQ(changes, (ThresholdChanges{{"max_local_prefill", "5"}}));
  auto bad = parse_threshold_changes(R"({"max_prefill_queue":-2})", &changes);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(bad->param, "max_prefill_queue");
  EXPECT_EQ(parse_threshold_changes("[1]", &changes)->message, "the body is not a JSON object");

  HttpRequest request;
  request.peer_is_loopback = true;
  EXPECT_FALSE(check_admin(request, ""));
  request.peer_is_loopback = false;
  EXPECT_EQ(check_admin(request, "")->status, 403);
  EXPECT_EQ(check_admin(request, "secret")->status, 401);
  request.headers["authorization"] = "Bearer secret";
  EXPECT_FALSE(check_admin(request, "secret"));

  RouterOptions router;
  EXPECT_EQ(thresholds_json(router, ""), json({{"max_local_prefill", 1000}, {"max_prefill_queue", 2}}));
  EXPECT_EQ(thresholds_json(router, "etcd:/tandem/x/disagg/")["source"], "etcd:/tandem/x/disagg/");
}

TEST(ServingMetrics, GaugesFollowTheDirectoryAtEachScrape) {
  testing::FakeDirectory directory;
  const WorkerKey d = directory.add("d1", rpc::pb::ROLE_DECODE);
  directory.add("p1", rpc::pb::ROLE_PREFILL);
  directory.workers[d].heartbeat.set_num_running(3);
  directory.workers[d].heartbeat.set_num_kv_blocks_used(25);
  directory.workers[d].heartbeat.set_num_kv_blocks_total(100);
  directory.prefills_held = 2;
  Metrics metrics;
  describe_serving_metrics(metrics);
  RouterOptions router;
  std::string text = render_serving_metrics(metrics, directory, 4, router);
  EXPECT_EQ(metrics.get("vllm:num_requests_running", labels({{"worker", "d1"}, {"role", "decode"}})), 3);
  EXPECT_EQ(metrics.get("vllm:kv_cache_usage_perc", labels({{"worker", "d1"}, {"role", "decode"}})), 0.25);
  EXPECT_EQ(metrics.get("tandem_workers", labels({{"role", "prefill"}})), 1);
  EXPECT_EQ(metrics.get("tandem_workers", labels({{"role", "both"}})), 0);
  EXPECT_EQ(metrics.get("tandem_prefill_queue_depth"), 2);
  EXPECT_EQ(metrics.get("tandem_requests_active"), 4);
  EXPECT_EQ(metrics.get("tandem_router_max_local_prefill"), 1000);
  EXPECT_EQ(text.find("tandem_cluster_members{"), std::string::npos);  // the fake lists no members
  EXPECT_NE(text.find("# TYPE tandem_remote_prefills_total counter"), std::string::npos);
  EXPECT_NE(text.find("tandem_remote_prefills_total 0"), std::string::npos);

  // A worker that left takes its series with it.
  directory.workers.erase(d);
  text = render_serving_metrics(metrics, directory, 0, router);
  EXPECT_EQ(text.find("worker=\"d1\""), std::string::npos);
}

}  // namespace
}  // namespace tandem::frontend
