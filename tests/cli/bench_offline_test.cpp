// `tandem bench throughput|latency` drive the real binary: every request generates exactly
// --output-len tokens (ignore_eos), and the figures in the JSON agree with each other and with the
// workload they claim; with --guided-json every saved text is a document valid against the schema
// (checked here and by ajv).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <iostream>
#include <set>
#include <tuple>
#include <string>
#include <vector>

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

// A schema with the shapes a model can get wrong: required keys, an enum, bounded integers, a string
// with a pattern, an array with bounds, a nested object, no other keys.
const char* kSchema = R"({"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12},
    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
    "temp_c": {"type": "integer", "minimum": -60, "maximum": 60},
    "sky": {"enum": ["clear", "cloudy", "rain"]},
    "wind": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3},
    "station": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}, "open": {"type": "boolean"}},
                "required": ["id", "open"], "additionalProperties": false}},
  "required": ["city", "zip", "temp_c", "sky", "wind", "station"], "additionalProperties": false})";

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> saved_texts(const std::string& path) {
  std::vector<std::string> texts;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line).at("text").get<std::string>());
  }
  return texts;
}

// Our own reading of kSchema, key by key (ajv below is the independent one).
void expect_valid_document(const std::string& text) {
  const auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(doc.is_discarded()) << "not JSON: " << text;
  ASSERT_TRUE(doc.is_object()) << text;
  EXPECT_EQ(doc.size(), 6u) << text;
  ASSERT_TRUE(doc.contains("city") && doc["city"].is_string()) << text;
  ASSERT_TRUE(doc.contains("zip") && doc["zip"].is_string()) << text;
  const std::string zip = doc["zip"];
  EXPECT_TRUE(zip.size() == 5 && zip.find_first_not_of("0123456789") == std::string::npos) << text;
  ASSERT_TRUE(doc.contains("temp_c") && doc["temp_c"].is_number_integer()) << text;
  EXPECT_GE(doc["temp_c"].get<int>(), -60);
  EXPECT_LE(doc["temp_c"].get<int>(), 60);
  ASSERT_TRUE(doc.contains("sky") && doc["sky"].is_string()) << text;
  EXPECT_TRUE((std::set<std::string>{"clear", "cloudy", "rain"}).count(doc["sky"].get<std::string>())) << text;
  ASSERT_TRUE(doc.contains("wind") && doc["wind"].is_array()) << text;
  EXPECT_GE(doc["wind"].size(), 1u);
  EXPECT_LE(doc["wind"].size(), 3u);
  for (const auto& w : doc["wind"]) EXPECT_TRUE(w.is_number()) << text;
  ASSERT_TRUE(doc.contains("station") && doc["station"].is_object()) << text;
  EXPECT_TRUE(doc["station"].contains("id") && doc["station"]["id"].is_number_integer() && doc["station"]["id"].get<int64_t>() >= 1) << text;
  EXPECT_TRUE(doc["station"].contains("open") && doc["station"]["open"].is_boolean()) << text;
}

// Runs a shell command; its output with stderr, `status` its wait status.
std::string run_capturing(const std::string& cmd, int* status) {
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

void expect_ajv_accepts(const std::string& schema_path, const std::string& outputs_path) {
  const std::string npm_dir = std::getenv("TANDEM_NPM_DIR") ? std::getenv("TANDEM_NPM_DIR") : std::string(TANDEM_DATA_DIR) + "/npm";
  if (!std::filesystem::exists(npm_dir + "/node_modules/ajv") || std::system("node --version > /dev/null 2>&1") != 0) {
    std::cout << "no node or ajv (scripts/fetch_data.sh): the ajv check is skipped\n";
    return;
  }
  int status = 0;
  const std::string out = run_capturing("node " + std::string(TANDEM_SOURCE_DIR) + "/tests/cli/validate_saved_outputs.mjs " +
                                            npm_dir + " " + schema_path + " " + outputs_path,
                                        &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("saved outputs valid"), std::string::npos) << out;
}

bool have_tokenizer() { return std::filesystem::exists(std::string(TANDEM_DATA_DIR) + "/tokenizers/qwen3/tokenizer.json"); }

// The offline bench under a schema (the GPU figure "decode step with and without schemas" runs this
// command): `tandem bench ARGS --guided-json <kSchema> --save-outputs ...` saves `num_texts` texts,
// each a valid document (our reading and ajv's); returns the figures for the caller's own checks.
// kSchema's shortest document is 91 bytes; the grammar guarantees an end within max_tokens when
// max_tokens is at least that (it counts a byte a token), hence --output-len 100 in the callers.
std::map<std::string, nlohmann::json> run_under_schema(const std::string& name, const std::string& args, size_t num_texts,
                                                       std::string* schema) {
  *schema = write_file("bench_schema_" + name + ".json", kSchema);
  const std::string outputs = ::testing::TempDir() + "/bench_outputs_" + name + ".jsonl";
  auto f = run_bench(args + " --guided-json " + *schema + " --save-outputs " + outputs, name + "_schema.json");
  const auto texts = saved_texts(outputs);
  EXPECT_EQ(texts.size(), num_texts);
  for (const auto& text : texts) expect_valid_document(text);
  expect_ajv_accepts(*schema, outputs);
  return f;
}

// Every request's text is a valid document, and the batch still runs --output-len steps.
TEST(BenchOffline, ThroughputUnderASchemaWritesValidDocuments) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  std::string schema;
  auto f = run_under_schema("tp", "throughput --model random:tiny-qwen3 --num-prompts 6 --input-len 12 --output-len 100 --temperature 1",
                            6, &schema);
  ASSERT_EQ(f.count("documents_ended"), 1u);
  EXPECT_EQ(f["output_throughput"]["guided_json"], schema);
  // ignore_eos: a request whose document is complete draws EOS (all the grammar allows) to the end.
  EXPECT_NEAR(f["output_throughput"]["value"].get<double>() * f["elapsed"]["value"].get<double>(), 6.0 * 100, 1e-6);
  EXPECT_GT(f["step_ms_median"]["value"].get<double>(), 0.0);
}

TEST(BenchOffline, LatencyUnderASchemaWritesValidDocuments) {
  if (!have_tokenizer()) GTEST_SKIP() << "no tokenizer data";
  std::string schema;
  auto f = run_under_schema("lat", "latency --model random:tiny-qwen3 --batch-size 3 --input-len 10 --output-len 100 --num-iters 2 "
                                   "--num-iters-warmup 0",
                            6, &schema);  // 2 iterations of 3
  EXPECT_NEAR(f["decode_tokens_per_s"]["value"].get<double>(), 3 * 1000.0 / f["decode_ms_per_token_median"]["value"].get<double>(), 1e-6);
}

TEST(BenchOffline, BadSchemasNameTheFlag) {
  for (const auto& [name, text, needle] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"bad_format.json", R"({"type": "string", "format": "date"})", "'format'"},
           {"not_json.json", "{oops", "not JSON"}}) {
    const std::string path = write_file(name, text);
    int status = 0;
    const std::string out =
        run_capturing(std::string(TANDEM_BINARY) + " bench throughput --model random:tiny-qwen3 --guided-json " + path, &status);
    EXPECT_NE(WEXITSTATUS(status), 0) << out;
    EXPECT_NE(out.find("--guided-json"), std::string::npos) << out;
    EXPECT_NE(out.find(needle), std::string::npos) << out;
  }
}

TEST(BenchOffline, BadFlagsNameTheFlag) {
  int status = 0;
  const std::string out = run_capturing(std::string(TANDEM_BINARY) + " bench throughput --model random:tiny-qwen3 --input-len 0", &status);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("--input-len"), std::string::npos) << out;
}

}  // namespace
