// Structured output on a GPU worker (label gpu; skipped without a CUDA device or the tokenizer data):
// constrained rows are drawn on the device with the engine's masks (backend::DeviceSamplingStep::masks,
// staged after the forward is enqueued), sampled and greedy, from a random-weight Qwen3-0.6B, and every
// reply still parses and keeps to its schema, its choice list and its regex.
//
// The binary is $TANDEM_BINARY when set (a bundle on the GPU machine); the tokenizer is
// $TANDEM_DATA_DIR/tokenizers/qwen3 (else the build's data folder).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <thread>

#include "harness.h"

namespace tandem::testing {
namespace {

using nlohmann::json;

std::string tokenizer_dir() {
  const char* data = std::getenv("TANDEM_DATA_DIR");
  return (data ? std::string(data) : std::string(TANDEM_DATA_DIR)) + "/tokenizers/qwen3";
}

TEST(GpuStructured, DeviceDrawsFollowSchemasChoicesAndRegexes) {
  if (shell("nvidia-smi -L 2>/dev/null | grep -c GPU").empty() || shell("nvidia-smi -L 2>/dev/null | grep -c GPU") == "0") {
    GTEST_SKIP() << "no CUDA device";
  }
  if (!std::filesystem::exists(tokenizer_dir() + "/tokenizer.json")) GTEST_SKIP() << "no tokenizer at " << tokenizer_dir();
  Cluster cluster({"--tokenizer", tokenizer_dir()});
  cluster.add_worker("both", {"--model", "random:qwen3-0.6b", "--device", "cuda:0", "--gpu-memory-utilization", "0.3", "--tokenizer",
                              tokenizer_dir()});
  ASSERT_TRUE(cluster.wait_for_workers(1, 300000));
  const json schema = json::parse(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}, "ok": {"type": "boolean"}},
      "required": ["name", "age", "ok"], "additionalProperties": false})");
  // 24 requests at once: one batch mixes constrained rows (sampled and greedy) on the device.
  std::vector<std::thread> threads;
  std::vector<std::string> failures(24);
  for (int i = 0; i < 24; ++i) {
    threads.emplace_back([&, i] {
      json body = {{"model", "random:qwen3-0.6b"}, {"prompt", "Reply:"}, {"max_tokens", 96}, {"seed", i}, {"temperature", i % 3 == 0 ? 0.0 : 1.0}};
      const int kind = i % 4;
      if (kind == 0 || kind == 1) body["guided_json"] = schema;
      if (kind == 2) body["guided_choice"] = {"alpha", "beta", "gamma"};
      if (kind == 3) body["guided_regex"] = "[0-9]{2,4}-[a-z]{3}";
      HttpResponse r = cluster.post("/v1/completions", body.dump(), 300000);
      if (r.status != 200) {
        failures[i] = "status " + std::to_string(r.status) + ": " + r.body;
        return;
      }
      const std::string text = json::parse(r.body)["choices"][0]["text"];
      if (kind <= 1) {
        const json doc = json::parse(text, nullptr, false);
        if (doc.is_discarded() || !doc.contains("name") || !doc.contains("age") || !doc.contains("ok") || doc["age"].get<int>() > 120) {
          failures[i] = "not valid: " + text;
        }
      } else if (kind == 2) {
        if (text != "alpha" && text != "beta" && text != "gamma") failures[i] = "not a choice: " + text;
      } else if (!std::regex_match(text, std::regex("[0-9]{2,4}-[a-z]{3}"))) {
        failures[i] = "no regex match: " + text;
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 24; ++i) EXPECT_EQ(failures[i], "") << "request " << i;
  EXPECT_EQ(cluster.log("both-0").find("event=constraint_violated"), std::string::npos) << cluster.log("both-0");
  EXPECT_TRUE(cluster.wait_no_leaked_blocks());
}

}  // namespace
}  // namespace tandem::testing
