// `tandem bench serve`: the serving benchmark, with the flags of `vllm bench serve`.
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "loadgen/serve_benchmark.h"
#include "cli/commands.h"
#include "common/error.h"

namespace tandem::cli {
namespace {

struct BenchServeFlags {
  loadgen::ServeBenchmarkOptions options;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string request_rates = "inf";
  std::string percentiles = "90,99";
  std::string progress = "auto";
  bool no_server_metrics = false;
};

template <typename T>
T value_or_throw(StatusOr<T> value, const std::string& flag) {
  if (!value.ok()) throw Error(flag + ": " + value.status().message());
  return std::move(*value);
}

// The tokenizer to build prompts with: --tokenizer, else the --model directory when it holds one.
std::string tokenizer_spec(const loadgen::ServeBenchmarkOptions& o) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  if (!o.client.model.empty() && std::filesystem::exists(std::filesystem::path(o.client.model) / "tokenizer.json")) {
    return o.client.model;
  }
  return {};
}

}  // namespace

Runner add_bench_serve_command(CLI::App& bench) {
  auto flags = std::make_shared<BenchServeFlags>();
  loadgen::ServeBenchmarkOptions& o = flags->options;
  CLI::App* cmd = bench.add_subcommand("serve", "Load an OpenAI-compatible server with streamed requests and "
                                                "measure TTFT, TPOT, ITL, E2E latency, throughput and goodput");
  cmd->add_option("--base-url", o.client.base_url, "Server URL, http://host:port (default from --host/--port)");
  cmd->add_option("--host", flags->host, "Server host when --base-url is not given")->capture_default_str();
  cmd->add_option("--port", flags->port, "Server port when --base-url is not given")->capture_default_str();
  cmd->add_option("--endpoint", o.client.endpoint, "/v1/completions or /v1/chat/completions")->capture_default_str();
  cmd->add_option("--model", o.client.model, "Model name sent in requests (default: the server's first model)");
  cmd->add_option("--tokenizer", o.tokenizer,
                  "Tokenizer for building prompts: a directory with tokenizer.json (default: --model when it is one), "
                  "or builtin:words for stub servers");
  cmd->add_option("--dataset-name,--dataset", o.dataset, "random, prefix or jsonl")->capture_default_str();
  cmd->add_option("--dataset-path", o.jsonl.path, "The jsonl dataset's file");
  cmd->add_option("--jsonl-output-len", o.jsonl.default_output_len,
                  "max_tokens for jsonl prompts without an output length (0 = server decides)")->capture_default_str();
  cmd->add_option("--num-prompts", o.num_prompts, "Requests per run")->capture_default_str();
  cmd->add_option("--random-input-len", o.random.input_len, "random: prompt tokens")->capture_default_str();
  cmd->add_option("--random-output-len", o.random.output_len, "random: output tokens")->capture_default_str();
  cmd->add_option("--random-range-ratio", o.random.range_ratio,
                  "random: lengths uniform in [len*(1-r), len*(1+r)]")->capture_default_str();
  cmd->add_option("--prefix-len,--prefix-repetition-prefix-len", o.prefix.prefix_len,
                  "prefix: tokens shared within a group")->capture_default_str();
  cmd->add_option("--prefix-suffix-len,--prefix-repetition-suffix-len", o.prefix.suffix_len,
                  "prefix: unique tokens per prompt")->capture_default_str();
  cmd->add_option("--prefix-num-prefixes,--prefix-repetition-num-prefixes", o.prefix.num_prefixes,
                  "prefix: number of groups")->capture_default_str();
  cmd->add_option("--prefix-output-len,--prefix-repetition-output-len", o.prefix.output_len,
                  "prefix: output tokens")->capture_default_str();
  cmd->add_option("--request-rate", flags->request_rates,
                  "Requests/s (Poisson or gamma arrivals), inf for all at once; a list such as 1,2,4,inf runs a sweep")
      ->capture_default_str();
  cmd->add_option("--burstiness", o.burstiness, "Gamma shape of arrivals: 1 = Poisson, <1 burstier")->capture_default_str();
  cmd->add_option("--max-concurrency", o.max_concurrency, "Most requests in flight (0 = unlimited)")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Seed of the dataset and the arrivals")->capture_default_str();
  cmd->add_option("--num-warmups", o.num_warmups, "Warm-up requests sent one by one before measuring")->capture_default_str();
  cmd->add_flag("--ignore-eos", o.client.ignore_eos, "Ask the server to ignore EOS so output lengths are exact");
  cmd->add_option("--temperature", o.client.temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--extra-body", o.client.extra_body_json, "JSON object merged into every request body");
  cmd->add_option("--percentiles,--metric-percentiles", flags->percentiles, "Percentiles to report, e.g. 50,90,99")
      ->capture_default_str();
  cmd->add_option("--goodput", o.goodput, "SLOs for goodput in ms: ttft:MS tpot:MS e2el:MS");
  cmd->add_option("--save-result", o.save_result, "Write the result file (JSON) here");
  cmd->add_option("--label", o.label, "Name of this series in reports (default: model @ base URL)");
  cmd->add_flag("--no-server-metrics", flags->no_server_metrics, "Do not scrape the server's /metrics");
  cmd->add_option("--progress", flags->progress, "auto, bar, lines or none")->capture_default_str();
  cmd->add_option("--progress-interval", o.progress_interval_s, "Seconds between progress lines")->capture_default_str();
  cmd->add_option("--request-timeout", o.client.request_timeout_s, "Seconds before a request fails")->capture_default_str();

  return [flags, cmd]() {
    loadgen::ServeBenchmarkOptions& o = flags->options;
    if (cmd->count("--base-url") == 0) o.client.base_url = "http://" + flags->host + ":" + std::to_string(flags->port);
    o.scrape_metrics = !flags->no_server_metrics;
    o.request_rates = value_or_throw(loadgen::parse_request_rates(flags->request_rates), "--request-rate");
    o.percentiles = value_or_throw(loadgen::parse_percentiles(flags->percentiles), "--percentiles");
    if (flags->progress == "auto") o.progress = loadgen::ProgressMode::kAuto;
    else if (flags->progress == "bar") o.progress = loadgen::ProgressMode::kBar;
    else if (flags->progress == "lines") o.progress = loadgen::ProgressMode::kLines;
    else if (flags->progress == "none") o.progress = loadgen::ProgressMode::kNone;
    else throw Error("--progress: unknown mode '" + flags->progress + "' (use auto, bar, lines or none)");
    throw_if_error(loadgen::validate_options(o));
    auto client = value_or_throw(loadgen::OpenAIClient::create(o.client), "--base-url");

    std::unique_ptr<loadgen::TokenCodec> codec;
    const std::string spec = tokenizer_spec(o);
    if (o.dataset != "jsonl" || !spec.empty()) codec = loadgen::open_token_codec(spec, "--tokenizer");
    // Before the dataset, which can take seconds to tokenize: an unreachable server fails at once.
    Status reachable = client->check_reachable(5.0);
    if (!reachable.ok()) throw Error("--base-url: " + reachable.message() + " (is the server running?)");
    auto built = loadgen::build_dataset(o, codec.get());
    throw_if_error(built.status());
    std::vector<loadgen::BenchRequest> requests = std::move(*built);
    if (static_cast<int32_t>(requests.size()) < o.num_prompts) {
      spdlog::warn("bench serve: --dataset-path holds {} prompts, fewer than --num-prompts {}; each run sends {}",
                   requests.size(), o.num_prompts, requests.size());
    }

    if (o.client.model.empty()) {
      auto models = client->get("/v1/models", 10.0);
      nlohmann::json list = models.ok() ? nlohmann::json::parse(*models, nullptr, false) : nlohmann::json();
      if (!list.is_object() || !list.contains("data") || !list["data"].is_array() || list["data"].empty() ||
          !list["data"][0].contains("id")) {
        throw Error("--model: not given, and the server's /v1/models did not name a model");
      }
      o.client.model = list["data"][0]["id"].get<std::string>();
      client = value_or_throw(loadgen::OpenAIClient::create(o.client), "--base-url");
    }
    if (o.label.empty()) o.label = o.client.model + " @ " + o.client.base_url;
    auto doc = loadgen::run_serve_benchmark(o, *client, requests, codec.get(), stdout);
    throw_if_error(doc.status());
    if (!o.save_result.empty()) std::printf("Result written to %s\n", o.save_result.c_str());
    return 0;
  };
}

}  // namespace tandem::cli
