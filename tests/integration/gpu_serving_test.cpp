// Disaggregated serving on GPUs (label gpu; skipped where no CUDA device is visible): a prefill and a
// decode worker process on one GPU move KV over CUDA IPC, and their greedy tokens equal those of the
// same prompt prefilled locally on the decode worker and of `tandem generate --device cuda:0`; with
// IPC disabled, or unopenable, the KV goes over TCP and the tokens are still equal. `tandem serve`
// lays the workers out itself (one GPU shared, or prefill on cuda:0 and decode on cuda:1).
//
// The binary is $TANDEM_BINARY when set (a bundle on the GPU machine); TANDEM_KEEP_TEST_LOGS keeps logs.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "harness.h"
#include "model/weight_source.h"
#include "transfer/transfer.h"
#include "worker/worker.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

int gpus() {
  static int n = backend::cuda::cuda_device_count();
  return n;
}

std::vector<int> ids_of(const HttpResponse& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.contains("choices")) return {};
  return j["choices"][0]["token_ids"].get<std::vector<int>>();
}

// Token ids in 1000..20999, or below `vocab` for the fixtures' small vocabularies.
std::string prompt_ids(int n, int seed, int vocab = 0) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (i) out += ',';
    out += std::to_string(vocab > 0 ? 3 + rng() % (vocab - 3) : 1000 + rng() % 20000);
  }
  return out;
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(v[i]);
  }
  return out;
}

// `tandem generate` on cuda:0: the one-process reference.
std::string run_generate(const std::string& model, const std::string& ids, int max_tokens) {
  std::string command = tandem_binary() + " generate --model " + model + " --device cuda:0 --prompt-ids " + ids +
                        " --max-tokens " + std::to_string(max_tokens) + " 2>/dev/null";
  return shell(command);
}

std::string completion(const std::string& ids, int max_tokens) {
  return R"({"prompt":[)" + ids + R"(],"max_tokens":)" + std::to_string(max_tokens) +
         R"(,"temperature":0,"ignore_eos":true,"return_token_ids":true})";
}

// Two prompts long enough to go remote, each served remote then local; both equal generate's.
void expect_disaggregated_equals_aggregated(Cluster& cluster, const std::string& model, int expected_remote) {
  const int kTokens = 16;
  for (int seed : {1, 2}) {
    const std::string ids = prompt_ids(seed == 1 ? 150 : 333, seed);
    HttpResponse remote = cluster.post("/v1/completions", completion(ids, kTokens), 120000);
    ASSERT_EQ(remote.status, 200) << remote.body;
    ASSERT_EQ(cluster.post("/v1/tandem/router", R"({"max_local_prefill":100000})").status, 200);
    HttpResponse local = cluster.post("/v1/completions", completion(ids, kTokens), 120000);
    ASSERT_EQ(local.status, 200) << local.body;
    ASSERT_EQ(cluster.post("/v1/tandem/router", R"({"max_local_prefill":64})").status, 200);
    ASSERT_EQ(ids_of(remote).size(), static_cast<size_t>(kTokens));
    EXPECT_EQ(ids_of(remote), ids_of(local)) << "prompt " << seed;
    EXPECT_EQ(join(ids_of(remote)), run_generate(model, ids, kTokens)) << "prompt " << seed;
  }
  std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), expected_remote);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_GT(metric_value(m, "tandem_kv_transfer_bytes_total"), 0);
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

class GpuServing : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (gpus() < 1) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(GpuServing, CudaIpcOnOneGpu_DisaggregatedEqualsAggregatedAndGenerate) {
  const std::string model = GetParam();
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", model, "--device", "cuda:0", "--gpu-memory-utilization", "0.2"});
  cluster.add_worker("decode", {"--model", model, "--device", "cuda:0", "--gpu-memory-utilization", "0.2"});
  ASSERT_TRUE(cluster.wait_for_workers(2, 300000));
  expect_disaggregated_equals_aggregated(cluster, model, 2);
  std::string prefill_log = cluster.log("prefill-0");
  EXPECT_NE(prefill_log.find("transport=cuda_ipc"), std::string::npos) << prefill_log;
  EXPECT_EQ(prefill_log.find("transport=tcp"), std::string::npos) << prefill_log;
  EXPECT_EQ(prefill_log.find("kv_transfer_fallback"), std::string::npos) << prefill_log;
}

TEST_P(GpuServing, IpcDisabled_KvGoesOverTcpAndTokensAreEqual) {
  const std::string model = GetParam();
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", model, "--device", "cuda:0", "--gpu-memory-utilization", "0.2", "--kv-transfer", "tcp"});
  cluster.add_worker("decode", {"--model", model, "--device", "cuda:0", "--gpu-memory-utilization", "0.2"});
  ASSERT_TRUE(cluster.wait_for_workers(2, 300000));
  expect_disaggregated_equals_aggregated(cluster, model, 2);
  std::string prefill_log = cluster.log("prefill-0");
  EXPECT_NE(prefill_log.find("transport=tcp"), std::string::npos) << prefill_log;
  EXPECT_EQ(prefill_log.find("transport=cuda_ipc"), std::string::npos) << prefill_log;
}

// A real sticky CUDA error (an illegal address, injected at the worker's 6th forward) fails the
// requests in flight and the worker exits for its supervisor to restart it.
TEST(GpuFault, IllegalAddressMidStep_FailsTheRequestsAndTheWorkerExits) {
  if (gpus() < 1) GTEST_SKIP() << "no CUDA device";
  Cluster cluster;
  setenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP", "6", 1);
  int worker = cluster.add_worker("both", {"--model", "random:tiny-qwen3", "--device", "cuda:0", "--gpu-memory-utilization", "0.2"});
  unsetenv("TANDEM_INJECT_DEVICE_FAULT_AT_STEP");
  ASSERT_TRUE(cluster.wait_for_workers(1, 300000));
  EXPECT_EQ(check_device_failure_path(cluster, worker, "both-0"), "");
  EXPECT_NE(cluster.log("both-0").find("illegal"), std::string::npos) << "not the injected CUDA fault:\n" << cluster.log("both-0");
}

INSTANTIATE_TEST_SUITE_P(Models, GpuServing, ::testing::Values("random:tiny-qwen3", "random:qwen3-0.6b"),
                         [](const auto& info) { return info.param == "random:tiny-qwen3" ? std::string("TinyQwen3") : std::string("Qwen3_0_6B"); });

// Handles cannot be opened in the process that exported them: two backends in one process reach each
// other's address with CUDA IPC on offer, the open fails, and the push goes over TCP with the same bytes.
TEST(GpuTransfer, UnopenableHandles_FallBackToTcpWithTheSameBytes) {
  if (gpus() < 1) GTEST_SKIP() << "no CUDA device";
  auto weights = model::open_weight_source("random:tiny-qwen3", 0);
  backend::BackendOptions options;
  options.device = "cuda:0";
  options.num_kv_blocks = 32;
  auto a = backend::create_backend(*weights, options);
  auto b = backend::create_backend(*weights, options);
  const auto& spec = a->kv_cache_spec();
  auto a_mem = worker::backend_kv_memory(*a);
  auto b_mem = worker::backend_kv_memory(*b);
  auto a_tx = transfer::create_transfer_backend("auto", a_mem, "127.0.0.1", 0);
  auto b_tx = transfer::create_transfer_backend("auto", b_mem, "127.0.0.1", 0);
  ASSERT_EQ(a_tx->name(), "cuda_ipc");
  ASSERT_NE(b_tx->address().find(";cuda_ipc="), std::string::npos);
  std::mt19937 rng(7);
  std::vector<transfer::BlockCopy> copies;
  std::vector<std::vector<std::byte>> sent;
  for (int layer = 0; layer < spec.num_layers; ++layer) {
    for (int i = 0; i < 3; ++i) {
      std::vector<std::byte> bytes(spec.block_bytes());
      for (auto& x : bytes) x = static_cast<std::byte>(rng() & 0xff);
      ASSERT_TRUE(a->write_kv_block(layer, 4 + i, bytes).ok());
      sent.push_back(bytes);
      copies.push_back({layer, 4 + i, 20 + i});
    }
  }
  b_tx->expect("t", {20, 21, 22});
  auto stats = a_tx->push(b_tx->address(), "t", copies, 5000);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_EQ(stats->transport, "tcp");
  EXPECT_EQ(stats->num_bytes, static_cast<int64_t>(copies.size() * spec.block_bytes()));
  b_tx->forget("t");
  std::vector<std::byte> got(spec.block_bytes());
  for (size_t k = 0; k < copies.size(); ++k) {
    ASSERT_TRUE(b->read_kv_block(copies[k].layer, copies[k].dst_block, got).ok());
    EXPECT_EQ(got, sent[k]) << "layer " << copies[k].layer << " block " << copies[k].dst_block;
  }
}

// `tandem serve` on its own layout: --device cuda:0 (both workers share GPU 0) and, with two GPUs,
// --device cuda (prefill on cuda:0, decode on cuda:1). Long prompts go remote; tokens equal generate's.
// Two GPUs: the real-shape Qwen3-0.6B and Llama-3.1-8B, and each transformers-checked fixture.
struct ServeCase {
  std::string name;
  std::string device;
  std::string model;    // a preset, or a fixture's folder name under the test data's models/
  int vocab = 0;        // fixtures: prompt ids stay below it
  bool fixture = false;
};

std::string fixture_path(const std::string& name) {
  const char* dir = std::getenv("TANDEM_TEST_DATA_DIR");
  return std::string(dir && *dir ? dir : TANDEM_BUILD_TEST_DATA_DIR) + "/models/" + name;
}

class GpuServe : public ::testing::TestWithParam<ServeCase> {};

TEST_P(GpuServe, LaysOutWorkersAndServesGreedyTokensEqualToGenerate) {
  const ServeCase& c = GetParam();
  const int needed = c.device == "cuda" ? 2 : 1;
  if (gpus() < needed) GTEST_SKIP() << "needs " << needed << " CUDA device(s)";
  const std::string model = c.fixture ? fixture_path(c.model) : c.model;
  ServeProcess serve("gpu-serve", {"--model", model, "--device", c.device, "--gpu-memory-utilization", "0.5",
                                   "--max-local-prefill", "64", "--child-log-level", "info"});
  const int port = serve.port();
  ASSERT_GT(port, 0);
  auto metrics = [&] { return http(port, "GET", "/metrics").body; };
  ASSERT_TRUE(serve.wait_for_workers(2, 300000)) << serve.log();
  std::string log = serve.log();
  EXPECT_NE(log.find("prefill-0 cuda:0 (TP1)"), std::string::npos) << log;
  EXPECT_NE(log.find(c.device == "cuda" ? "decode-0 cuda:1 (TP1)" : "decode-0 cuda:0 (TP1)"), std::string::npos) << log;
  // The fixtures hold 256 positions: 200 prompt + 16 generated tokens fit.
  for (int seed : {3, 4}) {
    const std::string ids = prompt_ids(200, seed, c.vocab);
    HttpResponse r = http(port, "POST", "/v1/completions", completion(ids, 16), {{"Content-Type", "application/json"}}, 120000);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(join(ids_of(r)), run_generate(model, ids, 16)) << "prompt " << seed;
  }
  std::string m = metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 2);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  serve.terminate();
  log = serve.log();
  EXPECT_NE(log.find("transport=cuda_ipc"), std::string::npos) << log;
}

INSTANTIATE_TEST_SUITE_P(
    Devices, GpuServe,
    ::testing::Values(ServeCase{"OneGpu", "cuda:0", "random:qwen3-0.6b"}, ServeCase{"TwoGpus", "cuda", "random:qwen3-0.6b"},
                      ServeCase{"TwoGpusLlama8B", "cuda", "random:llama-3.1-8b"},
                      ServeCase{"TwoGpusFixtureLlamaGqaRope3", "cuda", "llama_gqa_rope3", 384, true},
                      ServeCase{"TwoGpusFixtureLlamaMqaTiedBf16", "cuda", "llama_mqa_tied_bf16", 320, true},
                      ServeCase{"TwoGpusFixtureQwen2GqaTiedFp16", "cuda", "qwen2_gqa_tied_fp16", 352, true},
                      ServeCase{"TwoGpusFixtureQwen3Gqa", "cuda", "qwen3_gqa", 400, true},
                      ServeCase{"TwoGpusFixtureQwen3MqaTiedBf16", "cuda", "qwen3_mqa_tied_bf16", 288, true}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace tandem::testing
