// `tandem bench serve` and `tandem bench report` as a user runs them: the real binary against the stub
// server. Bad flags fail before any request; a sweep writes a result file; the report page loads in
// headless Chromium with one chart per plot and the right series.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "stub_openai_server.h"
#include "testing/dependencies.h"

namespace tandem::loadgen {
namespace {

using testing::StubOpenAIServer;
using testing::StubScript;
namespace fs = std::filesystem;

struct CommandResult {
  int rc = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

class BenchCliTest : public ::testing::Test {
 protected:
  BenchCliTest()
      : server_([](const std::string&) {
          StubScript s;
          s.gaps_ms = testing::uniform_gaps(6, 2, 1);
          return s;
        }) {
    dir_ = fs::temp_directory_path() / ("tandem_bench_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  ~BenchCliTest() override { fs::remove_all(dir_); }

  CommandResult run(const std::string& args) {
    CommandResult r;
    std::string cmd = std::string(TANDEM_BINARY) + " " + args + " >" + (dir_ / "stdout").string() + " 2>" +
                      (dir_ / "stderr").string() + " </dev/null";
    int status = std::system(cmd.c_str());
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir_ / "stdout");
    r.err = slurp(dir_ / "stderr");
    return r;
  }

  std::string serve_args() { return "bench serve --base-url " + server_.base_url() + " --model stub --tokenizer builtin:words "; }

  void expect_flag_error(const std::string& args, const std::string& flag) {
    CommandResult r = run(args);
    EXPECT_NE(r.rc, 0) << args;
    EXPECT_NE(r.err.find(flag), std::string::npos) << "stderr: " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    EXPECT_EQ(server_.num_requests(), 0) << args;
  }

  StubOpenAIServer server_;
  fs::path dir_;
};

TEST_F(BenchCliTest, BadFlagsNameTheFlagBeforeAnyRequest) {
  expect_flag_error(serve_args() + "--dataset-name sharegpt-typo", "--dataset-name");
  expect_flag_error(serve_args() + "--request-rate=-2", "--request-rate");
  expect_flag_error(serve_args() + "--request-rate 1,zero", "--request-rate");
  expect_flag_error(serve_args() + "--burstiness 0", "--burstiness");
  expect_flag_error(serve_args() + "--goodput ttft:abc", "--goodput");
  expect_flag_error(serve_args() + "--dataset-name jsonl --dataset-path /nonexistent.jsonl", "--dataset-path");
  expect_flag_error(serve_args() + "--random-input-len 0", "--random-input-len");
  expect_flag_error(serve_args() + "--tokenizer /nonexistent-dir", "--tokenizer");
  expect_flag_error("bench serve --base-url http://127.0.0.1:1 --tokenizer builtin:words --num-prompts 2", "--base-url");
  expect_flag_error("bench serve --base-url https://127.0.0.1:1 --tokenizer builtin:words", "--base-url");
}

TEST(BenchCli, FailingWarmupStopsBeforeTheMeasuredRun) {
  StubOpenAIServer server([](const std::string&) {
    StubScript s;
    s.fault = StubScript::Fault::kHttp500;
    return s;
  });
  const std::string cmd = std::string(TANDEM_BINARY) + " bench serve --base-url " + server.base_url() +
                          " --model wrong --tokenizer builtin:words --num-prompts 50 --progress none 2>&1";
  std::string output;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  EXPECT_NE(::pclose(pipe), 0);
  EXPECT_NE(output.find("warm-up request"), std::string::npos) << output;
  EXPECT_NE(output.find("HTTP 500"), std::string::npos) << output;
  EXPECT_NE(output.find("--model"), std::string::npos) << output;
  EXPECT_EQ(server.num_requests(), 1);
}

TEST_F(BenchCliTest, SweepWritesAResultFileWithEveryDocumentedField) {
  const fs::path result = dir_ / "result.json";
  CommandResult r = run(serve_args() + "--num-prompts 30 --random-input-len 16 --random-output-len 6 "
                        "--request-rate 300,inf --goodput ttft:1000 tpot:100 --percentiles 50,90,99 --progress lines "
                        "--label stubby --save-result " + result.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Serving Benchmark Result"), std::string::npos);
  EXPECT_NE(r.out.find("Request goodput (req/s):"), std::string::npos);
  EXPECT_NE(r.err.find("30/30 requests done (0 failed)"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\r'), std::string::npos);  // not a terminal: lines, no redrawn bar
  nlohmann::json doc = nlohmann::json::parse(slurp(result));
  EXPECT_EQ(doc["format"], "tandem-bench-serve/1");
  EXPECT_EQ(doc["label"], "stubby");
  for (const char* key : {"base_url", "endpoint", "model", "tokenizer", "dataset_name", "random_input_len",
                          "random_output_len", "random_range_ratio", "num_prompts", "request_rates", "burstiness",
                          "max_concurrency", "seed", "num_warmups", "ignore_eos", "temperature", "extra_body",
                          "percentiles", "goodput", "request_timeout_s"}) {
    EXPECT_TRUE(doc["config"].contains(key)) << key;
  }
  ASSERT_EQ(doc["runs"].size(), 2u);
  for (const auto& run : doc["runs"]) {
    for (const char* key : {"request_rate", "burstiness", "max_concurrency", "started_at", "duration", "completed",
                            "failed", "failures", "total_input_tokens", "total_output_tokens", "request_throughput",
                            "request_goodput", "good_requests", "input_throughput", "output_throughput",
                            "total_token_throughput", "peak_output_throughput", "peak_concurrent_requests",
                            "prompt_len_mismatches", "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p50_ttft_ms",
                            "p90_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "p99_itl_ms",
                            "mean_e2el_ms", "p99_e2el_ms", "timeline", "server_metrics_delta", "requests"}) {
      EXPECT_TRUE(run.contains(key)) << key;
    }
    EXPECT_EQ(run["completed"], 30);
    EXPECT_EQ(run["total_output_tokens"], 180);
    ASSERT_EQ(run["requests"].size(), 30u);
    for (const char* key : {"success", "http_status", "prompt_len", "output_len", "usage_prompt_tokens",
                            "usage_completion_tokens", "scheduled_s", "start_s", "end_s", "num_chunks",
                            "output_tokens", "ttft_ms", "tpot_ms", "e2el_ms", "itl_ms"}) {
      EXPECT_TRUE(run["requests"][0].contains(key)) << key;
    }
    EXPECT_EQ(run["requests"][0]["prompt_len"], 16);
    EXPECT_EQ(run["requests"][0]["usage_prompt_tokens"], 16);
  }
}

TEST_F(BenchCliTest, PrefixAndJsonlDatasetsRunOnChat) {
  CommandResult prefix = run(serve_args() + "--dataset-name prefix --prefix-len 32 --prefix-suffix-len 8 "
                             "--prefix-num-prefixes 2 --prefix-output-len 4 --num-prompts 6 --endpoint /v1/chat/completions "
                             "--max-concurrency 2 --progress none");
  ASSERT_EQ(prefix.rc, 0) << prefix.err;
  EXPECT_NE(prefix.out.find("Successful requests:                     6"), std::string::npos) << prefix.out;
  EXPECT_NE(prefix.out.find("tandem_stub_requests_total"), std::string::npos) << prefix.out;
  const fs::path jsonl = dir_ / "prompts.jsonl";
  std::ofstream(jsonl) << "{\"prompt\": \"tell me a story\", \"output_len\": 3}\n{\"prompt\": \"and another\"}\n";
  CommandResult j = run("bench serve --base-url " + server_.base_url() + " --dataset-name jsonl --dataset-path " +
                        jsonl.string() + " --num-prompts 5 --progress none --no-server-metrics");
  ASSERT_EQ(j.rc, 0) << j.err;  // no --model: the first of the server's /v1/models
  EXPECT_NE(slurp(dir_ / "stdout").find("Successful"), std::string::npos);
  EXPECT_NE(j.out.find("Successful requests:                     2"), std::string::npos) << j.out;
  EXPECT_EQ(j.out.find("tandem_stub_requests_total"), std::string::npos) << j.out;
  EXPECT_NE(j.err.find("fewer than --num-prompts"), std::string::npos) << j.err;
}

TEST_F(BenchCliTest, ReportPageLoadsOfflineWithOneChartPerPlot) {
  const std::string chromium = "/usr/bin/chromium";
  const std::string node_modules = std::string(TANDEM_DATA_DIR) + "/npm/node_modules";
  TANDEM_SKIP_OR_FAIL_IF_MISSING(
      !fs::exists(chromium) || !fs::exists(node_modules + "/playwright-core") || std::system("node --version >/dev/null 2>&1") != 0,
      "chromium, node and playwright-core (scripts/setup.sh installs them)");
  const fs::path a = dir_ / "a.json", b = dir_ / "b.json", html = dir_ / "report.html";
  ASSERT_EQ(run(serve_args() + "--num-prompts 12 --random-input-len 8 --random-output-len 6 --request-rate 200,inf "
                "--goodput ttft:1000 --progress none --label aggregated --save-result " + a.string()).rc, 0);
  ASSERT_EQ(run(serve_args() + "--num-prompts 12 --random-input-len 8 --random-output-len 6 --request-rate 100,inf "
                "--progress none --label disaggregated --save-result " + b.string()).rc, 0);
  CommandResult report = run("bench report " + a.string() + " " + b.string() + " --out " + html.string());
  ASSERT_EQ(report.rc, 0) << report.err;
  CommandResult bad = run("bench report " + html.string() + " --out " + (dir_ / "x.html").string());
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("not a result file"), std::string::npos) << bad.err;

  std::string cmd = "node " + std::string(TANDEM_REPORT_CHECK) + " " + html.string() + " " + node_modules + " " +
                    chromium + " >" + (dir_ / "check.json").string() + " 2>" + (dir_ / "check.err").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(dir_ / "check.err");
  nlohmann::json page = nlohmann::json::parse(slurp(dir_ / "check.json"));
  EXPECT_TRUE(page["consoleErrors"].empty()) << page["consoleErrors"].dump();
  EXPECT_TRUE(page["pageErrors"].empty()) << page["pageErrors"].dump();
  EXPECT_TRUE(page["externalRequests"].empty()) << page["externalRequests"].dump();
  EXPECT_TRUE(page["ready"].get<bool>());
  const auto& charts = page["charts"];
  EXPECT_EQ(page["canvases"], 7);
  ASSERT_EQ(charts.size(), 7u);
  using Labels = std::vector<std::string>;
  auto labels = [&](const char* id) { return charts[id]["labels"].get<Labels>(); };
  EXPECT_EQ(labels("ttft_vs_rate"), (Labels{"aggregated mean", "aggregated median", "aggregated p90", "aggregated p99",
                                            "disaggregated mean", "disaggregated median", "disaggregated p90",
                                            "disaggregated p99"}));
  EXPECT_EQ(labels("tpot_vs_rate").size(), 8u);
  EXPECT_EQ(labels("goodput_vs_rate"), (Labels{"aggregated goodput", "aggregated request throughput",
                                               "disaggregated request throughput"}));
  const Labels runs = {"aggregated @ 200", "aggregated @ inf", "disaggregated @ 100", "disaggregated @ inf"};
  for (const char* id : {"ttft_cdf", "tpot_cdf", "e2el_cdf", "throughput_timeline"}) EXPECT_EQ(labels(id), runs) << id;
  // Rates 100, 200, inf on the x axis: each file has a point at two of them.
  EXPECT_EQ(charts["ttft_vs_rate"]["points"][0], 2);
  EXPECT_EQ(charts["ttft_cdf"]["points"][0], 12);
  for (const auto& [id, chart] : charts.items()) {
    EXPECT_GT(chart["width"].get<int>(), 100) << id;
    EXPECT_GT(chart["height"].get<int>(), 100) << id;
  }
}

}  // namespace
}  // namespace tandem::loadgen
