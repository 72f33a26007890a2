// Serving with tensor-parallel CPU workers, through the real binary (tests/integration/harness.h):
// a prefill worker and a decode worker of different TP sizes (1 → 2 and 2 → 1), every prompt remote,
// give the greedy tokens of `tandem generate` at TP 1 (the CPU TP backend reads and writes KV blocks in
// the whole model's layout, so TCP moves them between any two TP sizes); and a TP 2 worker whose rank
// fails mid-step fails its requests and exits like a worker whose device failed, without hanging.
// `tandem serve` with per-role TP sizes (--prefill-/--decode-tensor-parallel-size) lays out such
// workers itself and gives the same tokens; a model that does not split is refused before any worker.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
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

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

std::string temp_dir() {
  char dir_template[] = "/tmp/tandem-tp-serve-XXXXXX";
  return mkdtemp(dir_template);
}

class ServeTpLayouts : public ::testing::TestWithParam<std::pair<int, int>> {};

// serve passes each role's TP size to its workers (their backends log it), prints its layout in one line,
// and, every prompt remote (--max-local-prefill 64 < 150 tokens), serves generate's TP 1 greedy tokens.
TEST_P(ServeTpLayouts, ServeWithPerRoleTpSizesGivesGenerateTokens) {
  const auto [prefill_tp, decode_tp] = GetParam();
  const std::string dir = temp_dir();
  const int port = free_port();
  ASSERT_GT(port, 0);
  Process serve({tandem_binary(), "serve", "--model", kModel, "--device", "cpu", "--port", std::to_string(port), "--threads",
                 "2", "--max-local-prefill", "64", "--prefill-tensor-parallel-size", std::to_string(prefill_tp),
                 "--decode-tensor-parallel-size", std::to_string(decode_tp), "--worker-arg=--num-kv-blocks=256",
                 "--child-log-level", "info"},
                dir + "/serve.log");
  auto metrics = [&] { return http(port, "GET", "/metrics").body; };
  ASSERT_TRUE(wait_until([&] { return metric_value(metrics(), "tandem_workers") >= 2; }, std::chrono::seconds(120)))
      << read_text(dir + "/serve.log");
  const std::string log = read_text(dir + "/serve.log");
  EXPECT_NE(log.find("tandem serve: layout prefill-0 cpu (TP" + std::to_string(prefill_tp) + ", 2 threads), decode-0 cpu (TP" +
                     std::to_string(decode_tp) + ", 2 threads)"),
            std::string::npos)
      << log;
  // The TP worker's backend says so itself (a TP 1 worker runs the plain CPU backend, which does not).
  EXPECT_NE(log.find("tensor_parallel_size=2"), std::string::npos) << log;
  for (int seed : {1, 2}) {
    const std::string ids = random_prompt_ids(150, seed);
    HttpResponse r = http(port, "POST", "/v1/completions",
                          R"({"prompt":[)" + ids + R"(],"max_tokens":12,"temperature":0,"return_token_ids":true})",
                          {{"Content-Type", "application/json"}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(token_ids(r), generate_tp1(ids, 12)) << "prefill tp " << prefill_tp << " decode tp " << decode_tp;
  }
  const std::string m = metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  serve.terminate();
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(PrefillDecode, ServeTpLayouts, ::testing::Values(std::pair{1, 2}, std::pair{2, 1}),
                         [](const auto& info) {
                           return "prefill_tp" + std::to_string(info.param.first) + "_decode_tp" + std::to_string(info.param.second);
                         });

// tiny-qwen3 has 4 attention heads: TP 3 does not split it. serve says so, naming the flag, and exits
// before it starts any process; so does a TP size smuggled in through --worker-arg.
TEST(TpServing, ServeRefusesATpSizeTheModelDoesNotSplitBeforeStartingWorkers) {
  const std::string dir = temp_dir();
  const int port = free_port();
  ASSERT_GT(port, 0);
  struct Case {
    std::vector<std::string> flags;
    std::string expected;
  };
  int run = 0;
  for (const Case& c : {Case{{"--decode-tensor-parallel-size", "3"}, "--decode-tensor-parallel-size 3: random:tiny-qwen3: cannot split"},
                        Case{{"--tensor-parallel-size", "3"}, "--tensor-parallel-size 3: random:tiny-qwen3: cannot split"},
                        Case{{"--worker-arg=--tensor-parallel-size=2"}, "--worker-arg=--tensor-parallel-size=2: give serve's own"}}) {
    std::vector<std::string> argv = {tandem_binary(), "serve", "--model", kModel, "--device", "cpu", "--port", std::to_string(port)};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    const std::string log_path = dir + "/serve-" + std::to_string(run++) + ".log";  // one per run: logs append
    Process serve(argv, log_path);
    ASSERT_TRUE(wait_until([&] { return !serve.running(); }, std::chrono::seconds(20))) << "serve kept running: " << c.expected;
    EXPECT_NE(serve.exit_code(), 0);
    const std::string log = read_text(log_path);
    EXPECT_NE(log.find(c.expected), std::string::npos) << log;
    if (c.flags[0] != "--worker-arg=--tensor-parallel-size=2") {
      EXPECT_NE(log.find("num_attention_heads"), std::string::npos) << log;
    }
    // Nothing was started: no frontend answered, no layout was printed.
    EXPECT_EQ(log.find("tandem serve: layout"), std::string::npos) << log;
    EXPECT_EQ(http(port, "GET", "/health").status, 0);
  }
  std::filesystem::remove_all(dir);
}

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
