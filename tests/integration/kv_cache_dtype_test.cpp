// --kv-cache-dtype between workers, through the real binary on the CPU (issue 18): an FP8 prefill worker
// pushes FP8 blocks (values and scales) over TCP to an FP8 decode worker and the greedy tokens equal
// `tandem generate --kv-cache-dtype fp8`; a bf16 prefill worker and an fp8 decode worker refuse each other
// with a message naming both dtypes and the request is prefilled on the decode worker instead; /metrics
// shows each worker's KV cache dtype; a dtype the flag does not know is refused naming the flag.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

std::string generate(const std::string& ids, int max_tokens, const std::string& kv_dtype) {
  return shell(tandem_binary() + " generate --model " + kModel + " --threads 1 --kv-cache-dtype " + kv_dtype +
               " --prompt-ids " + ids + " --max-tokens " + std::to_string(max_tokens) + " 2>/dev/null");
}

std::string completion(const std::string& ids, int max_tokens) {
  return R"({"prompt":[)" + ids + R"(],"max_tokens":)" + std::to_string(max_tokens) +
         R"(,"temperature":0,"return_token_ids":true})";
}

TEST(KvCacheDtype, Fp8BlocksMoveBetweenFp8WorkersAndDecodeAsGenerateDoes) {
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", kModel, "--num-kv-blocks", "256", "--kv-cache-dtype", "fp8"});
  cluster.add_worker("decode", {"--model", kModel, "--num-kv-blocks", "256", "--kv-cache-dtype", "fp8"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::string ids = random_prompt_ids(150, 3);  // over --max-local-prefill: remote
  HttpResponse r = cluster.post("/v1/completions", completion(ids, 12));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string fp8 = generate(ids, 12, "fp8");
  EXPECT_EQ(token_ids(r), fp8);
  // The FP8 path is in use: fp32 KV would give these tokens only by chance (the prompts are random).
  EXPECT_NE(fp8, "");
  const std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefills_total"), 1);
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 0);
  EXPECT_GT(metric_value(m, "tandem_kv_transfer_bytes_total"), 0);
  EXPECT_EQ(metric_value(m, "vllm:cache_config_info", "cache_dtype=\"fp8\""), 2) << m;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(KvCacheDtype, Bf16PrefillAndFp8DecodeRefuseEachOtherNamingBothDtypes) {
  Cluster cluster({"--max-local-prefill", "64"});
  cluster.add_worker("prefill", {"--model", kModel, "--num-kv-blocks", "256", "--kv-cache-dtype", "bf16"});
  cluster.add_worker("decode", {"--model", kModel, "--num-kv-blocks", "256", "--kv-cache-dtype", "fp8"});
  ASSERT_TRUE(cluster.wait_for_workers(2));
  const std::string ids = random_prompt_ids(150, 4);
  HttpResponse r = cluster.post("/v1/completions", completion(ids, 8));
  ASSERT_EQ(r.status, 200) << r.body;
  // Prefilled on the decode worker instead, in its own dtype.
  EXPECT_EQ(token_ids(r), generate(ids, 8, "fp8"));
  const std::string m = cluster.metrics();
  EXPECT_EQ(metric_value(m, "tandem_remote_prefill_fallbacks_total"), 1);
  EXPECT_EQ(metric_value(m, "tandem_kv_transfer_bytes_total"), 0);
  EXPECT_EQ(metric_value(m, "vllm:cache_config_info", "cache_dtype=\"bf16\""), 1) << m;
  EXPECT_EQ(metric_value(m, "vllm:cache_config_info", "cache_dtype=\"fp8\""), 1) << m;
  const std::string expected =
      "KV cache dtype differs between prefill and decode workers: the decode worker stores fp8 KV, this prefill "
      "worker bf16 (start both with the same --kv-cache-dtype)";
  const std::string prefill_log = cluster.log("prefill-0");
  const std::string decode_log = cluster.log("decode-1");
  EXPECT_NE(prefill_log.find("event=remote_prefill_refused"), std::string::npos) << prefill_log;
  EXPECT_NE(prefill_log.find(expected), std::string::npos) << prefill_log;
  EXPECT_NE(decode_log.find("event=remote_prefill_fallback"), std::string::npos) << decode_log;
  EXPECT_NE(decode_log.find(expected), std::string::npos) << decode_log;
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

TEST(KvCacheDtype, UnknownDtypeIsRefusedNamingTheFlag) {
  int status = 0;
  const std::string out = shell(tandem_binary() + " generate --model " + kModel +
                                    " --kv-cache-dtype fp8_e5m2 --prompt-ids 1,2 --max-tokens 1 2>&1",
                                &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("--kv-cache-dtype"), std::string::npos) << out;
}

}  // namespace
}  // namespace tandem::testing
