// `tandem bench throughput|latency` drive the real binary: every request generates exactly
// --output-len tokens (ignore_eos), and the figures in the JSON agree with each other and with the
// workload they claim.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "model/presets.h"

namespace {

std::map<std::string, nlohmann::json> run_bench(const std::string& args, const std::string& json_name) {
  const std::string json_path = ::testing::TempDir() + "/" + json_name;
  const std::string cmd = std::string(TANDEM_BINARY) + " bench " + args + " --output-json " + json_path + " > /dev/null";
  int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  std::map<std::string, nlohmann::json> by_figure;
  for (const auto& r : nlohmann::json::parse(std::ifstream(json_path))) by_figure[r.at("figure").get<std::string>()] = r;
  return by_figure;
}

TEST(BenchOffline, ThroughputFiguresDescribeTheWorkload) {
  auto f = run_bench("throughput --model random:tiny-qwen3 --num-prompts 6 --input-len 40 --output-len 9 --limit 100000", "tp.json");
  ASSERT_EQ(f.count("output_throughput"), 1u);
  const double elapsed = f["elapsed"]["value"].get<double>();
  const double requests = f["request_throughput"]["value"].get<double>() * elapsed;
  const double outputs = f["output_throughput"]["value"].get<double>() * elapsed;
  const double totals = f["total_token_throughput"]["value"].get<double>() * elapsed;
  EXPECT_NEAR(requests, 6.0, 1e-6);
  EXPECT_NEAR(outputs, 6.0 * 9, 1e-6);  // exactly output_len each: greedy with ignore_eos
  EXPECT_NEAR(totals, 6.0 * (40 + 9), 1e-6);
  EXPECT_EQ(f["output_throughput"]["device"], "cpu");
  EXPECT_NEAR(f["output_throughput"]["ratio_to_limit"].get<double>(), f["output_throughput"]["value"].get<double>() / 100000, 1e-12);
}

TEST(BenchOffline, LatencyReportsPrefillAndDecode) {
  auto f = run_bench("latency --model random:tiny-qwen3 --batch-size 2 --input-len 33 --output-len 5 --num-iters 2 --num-iters-warmup 0", "lat.json");
  for (const char* name : {"decode_ms_per_token_median", "prefill_ms_median", "latency_s_median"}) {
    ASSERT_EQ(f.count(name), 1u) << name;
    EXPECT_GT(f[name]["value"].get<double>(), 0.0) << name;
  }
  // The whole batch's latency covers its prefill and its four decode steps.
  const double latency_ms = 1000.0 * f["latency_s_median"]["value"].get<double>();
  EXPECT_GE(latency_ms + 1e-6, f["prefill_ms_median"]["value"].get<double>());
  EXPECT_NEAR(f["prefill_tokens_per_s_median"]["value"].get<double>(),
              2 * 33 / (f["prefill_ms_median"]["value"].get<double>() / 1000.0), 1e-6 * f["prefill_tokens_per_s_median"]["value"].get<double>());
}

TEST(BenchOffline, ThroughputSplitsEngineTimeAroundTheForward) {
  auto f = run_bench("throughput --model random:tiny-qwen3 --num-prompts 4 --input-len 20 --output-len 7", "tp_engine.json");
  // Each request needs its prefill and six decode steps; a request submitted while the first step runs
  // turns one of those into a mixed step, so only the last ones are sure to be pure decode steps.
  EXPECT_GE(f["engine_steps"]["value"].get<double>(), 7.0);
  EXPECT_GE(f["engine_decode_steps"]["value"].get<double>(), 1.0);
  EXPECT_LE(f["engine_decode_steps"]["value"].get<double>(), f["engine_steps"]["value"].get<double>());
  for (const char* name : {"engine_outside_forward_share", "engine_decode_outside_forward_share"}) {
    const double share = f[name]["value"].get<double>();
    EXPECT_GT(share, 0.0) << name;
    EXPECT_LT(share, 1.0) << name;
  }
  EXPECT_GT(f["engine_forward_ms_per_step"]["value"].get<double>(), 0.0);
}

// With one output token the latency benchmark is a prefill benchmark: model FLOPs per second of the
// time to the first token, the headline that --limit applies to.
TEST(BenchOffline, PrefillHeadlineCountsModelFlops) {
  auto f = run_bench("latency --model random:tiny-qwen3 --batch-size 2 --input-len 48 --output-len 1 --num-iters 2 "
                     "--num-iters-warmup 0 --limit 10",
                     "prefill.json");
  ASSERT_EQ(f.count("prefill_model_tflops_median"), 1u);
  EXPECT_EQ(f.count("decode_ms_per_token_median"), 0u);
  const auto c = tandem::model::preset_config("tiny-qwen3");
  const double h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  // Per prompt of n tokens: projections and MLP of every token, causal QK^T and PV, one lm_head row.
  const double n = 48;
  const double flops = 2 * (2.0 * c.num_layers * (h * (q + 2 * kv) + q * h + 3 * h * c.intermediate_size) * n +
                            4.0 * c.num_layers * c.num_heads * c.head_dim * n * (n + 1) / 2 + 2.0 * h * c.vocab_size);
  const double seconds = f["prefill_ms_median"]["value"].get<double>() / 1000.0;
  const double tflops = f["prefill_model_tflops_median"]["value"].get<double>();
  EXPECT_NEAR(tflops, flops / seconds / 1e12, 1e-6 * tflops);
  EXPECT_NEAR(f["prefill_model_tflops_median"]["ratio_to_limit"].get<double>(), tflops / 10, 1e-9);
}

TEST(BenchOffline, BadFlagsNameTheFlag) {
  const std::string cmd = std::string(TANDEM_BINARY) + " bench throughput --model random:tiny-qwen3 --input-len 0 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  int status = pclose(pipe);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("--input-len"), std::string::npos) << out;
}

}  // namespace
