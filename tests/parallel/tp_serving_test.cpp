// Serving with tensor-parallel CPU workers, through the real binary (tests/integration/harness.h):
// a prefill worker and a decode worker of different TP sizes (1 → 2 and 2 → 1), every prompt remote,
// give the greedy tokens of `tandem generate` at TP 1 (the CPU TP backend reads and writes KV blocks in
// the whole model's layout, so TCP moves them between any two TP sizes); and a TP 2 worker whose rank
// fails mid-step fails its requests and exits like a worker whose device failed, without hanging.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "harness.h"

namespace tandem::testing {
namespace {

const char* kModel = "random:tiny-qwen3";

std::string token_ids(const HttpResponse& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("choices")) return "";
  std::string out;
  for (int id : j["choices"][0]["token_ids"].get<std::vector<int>>()) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

std::string generate_tp1(const std::string& ids, int max_tokens) {
  return shell(tandem_binary() + " generate --model " + kModel + " --threads 1 --prompt-ids " + ids + " --max-tokens " +
               std::to_string(max_tokens) + " 2>/dev/null");
}

class TpLayouts : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(TpLayouts, RemotePrefillBetweenTpSizesEqualsGenerate) {
  const auto [prefill_tp, decode_tp] = GetParam();
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", kModel, "--num-kv-blocks", "256", "--tensor-parallel-size",
                                 std::to_string(prefill_tp)});
  cluster.add_worker("decode", {"--model", kModel, "--num-kv-blocks", "256", "--tensor-parallel-size",
                                std::to_string(decode_tp)});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  for (int seed : {1, 2}) {
    const std::string ids = random_prompt_ids(150, seed);  // over --max-local-prefill: remote
    HttpResponse r = cluster.post("/v1/completions", R"({"prompt":[)" + ids +
                                                         R"(],"max_tokens":12,"temperature":0,"return_token_ids":true})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(token_ids(r), generate_tp1(ids, 12)) << "prefill tp " << prefill_tp << " decode tp " << decode_tp;
  }
  const std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_GT(metric_value(m, "tandem_kv_transfer_bytes_total"), 0);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

INSTANTIATE_TEST_SUITE_P(PrefillDecode, TpLayouts, ::testing::Values(std::pair{1, 2}, std::pair{2, 1}),
                         [](const auto& info) {
                           return "prefill_tp" + std::to_string(info.param.first) + "_decode_tp" + std::to_string(info.param.second);
                         });

TEST(TpServing, ARankFailingMidStepFailsItsRequestsAndTheWorkerExits) {
  Cluster cluster;
  // The TP backend fails its last rank at its 6th forward; the other rank is then in a collective.
  setenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP", "6", 1);
  int worker = cluster.add_worker("both", {"--model", kModel, "--tensor-parallel-size", "2"});
  unsetenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  ASSERT_TRUE(cluster.wait_for_workers(1));
  EXPECT_EQ(check_device_failure_path(cluster, worker, "both-0"), "");
}

}  // namespace
}  // namespace tandem::testing
