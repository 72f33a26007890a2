// `tandem bench throughput` and `tandem bench latency`: offline benchmarks in one process through the
// engine, named and flagged as `vllm bench throughput|latency` are. Random token-id prompts of exact
// lengths, greedy, ignore_eos, so every request generates exactly --output-len tokens.
// `--guided-json FILE` puts every request under that JSON schema (constrained decoding, as a server
// request with `guided_json` is), so the same command measures the decode step with and without masks.
// Under a schema a request still runs --output-len steps: once its document is complete the grammar
// allows only EOS, which ignore_eos draws and discards, so the batch keeps its size to the end.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "cli/model_files.h"
#include "common/error.h"
#include "engine/engine.h"
#include "model/weight_source.h"
#include "structured/spec.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

using Seconds = std::chrono::duration<double>;

struct OfflineOptions {
  std::string model;
  // 8192 tokens per step as vLLM's benchmarks default; prefix caching off because random prompts share
  // nothing and the figures are about compute (the command has no --no-prefix-caching).
  EngineFlags engine_flags{.max_batch_tokens = 8192, .no_prefix_caching = true};
  uint64_t weights_seed = 0;
  int input_len = 512;
  int output_len = 128;
  int num_prompts = 64;   // throughput
  int batch_size = 1;     // latency
  int num_iters = 5;      // latency
  int num_iters_warmup = 1;
  uint64_t seed = 0;
  float temperature = 0.0f;  // 0 = greedy (argmax on the device); vLLM's throughput benchmark samples at 1.0
  float top_p = 1.0f;
  int top_k = 0;
  double limit = 0;       // the physical limit of the headline figure, for the ratio (0 = not given)
  std::string output_json;
  std::string guided_json_file;  // a JSON schema every request is constrained to ("" = none)
  std::string tokenizer_dir;     // the vocabulary the schema is compiled against (default: the model's)
  std::string save_outputs;      // JSON lines of each measured request's text ("" = not written)
};

// What a run needs beyond its engine when requests are constrained or their texts are saved.
struct Workload {
  std::string guided;  // the constraint spec of every request (structured/spec.h), "" = none
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
};

void add_common_flags(CLI::App* cmd, OfflineOptions& o) {
  cmd->add_option("--model", o.model, "Hugging Face model directory or random:<preset>")->required();
  cmd->add_option("--weights-seed", o.weights_seed, "Seed of random:<preset> weights")->capture_default_str();
  cmd->add_option("--input-len", o.input_len, "Prompt tokens per request")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--output-len", o.output_len, "Generated tokens per request")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  add_engine_flags(cmd, &o.engine_flags, kBenchOfflineRules);
  cmd->add_option("--seed", o.seed, "Seed of the random prompts (and of the draws)")->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "Sampling temperature of every request (0 = greedy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass")->capture_default_str()->check(CLI::Range(0.001, 1.0));
  cmd->add_option("--top-k", o.top_k, "Keep the k most likely tokens (0 = off)")->capture_default_str()->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--limit", o.limit, "Physical limit of the headline figure (same unit), to report the ratio");
  cmd->add_option("--output-json", o.output_json, "Write one JSON record per figure to this file");
  cmd->add_option("--guided-json", o.guided_json_file,
                  "Constrain every request to the JSON schema in this file (as a request's guided_json)");
  cmd->add_option("--tokenizer", o.tokenizer_dir,
                  "Directory with tokenizer.json for --guided-json and --save-outputs (default: the model's, or the real one "
                  "of a random preset's vocabulary)");
  cmd->add_option("--save-outputs", o.save_outputs,
                  "Write each measured request's text (up to its first EOS) to this file, one JSON object a line");
}

// Reads --guided-json and loads the tokenizer when a schema or saved texts need one. Throws Error naming
// the flag for a missing, malformed or unsupported schema.
Workload make_workload(const OfflineOptions& o, int vocab_size) {
  Workload w;
  if (!o.guided_json_file.empty()) {
    std::ifstream in(o.guided_json_file);
    if (!in) throw Error("--guided-json: cannot read '" + o.guided_json_file + "'");
    // Ordered: the grammar writes properties in the schema's order.
    const auto schema = nlohmann::ordered_json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (schema.is_discarded()) throw Error("--guided-json: '" + o.guided_json_file + "' is not JSON");
    w.guided = structured::json_schema_spec(schema).dump();
    Status valid = structured::validate_spec(w.guided);
    if (!valid.ok()) throw Error("--guided-json: '" + o.guided_json_file + "' cannot be enforced: " + valid.message());
  }
  if (!w.guided.empty() || !o.save_outputs.empty()) {
    w.tokenizer = tokenizer::Tokenizer::load(find_tokenizer_dir(o.model, o.tokenizer_dir, vocab_size));
  }
  return w;
}

std::unique_ptr<engine::Engine> make_engine(const OfflineOptions& o, int num_seqs_at_once, Workload* workload) {
  auto weights = model::open_weight_source(o.model, o.weights_seed);
  backend::BackendOptions b = o.engine_flags.backend_options();
  const int blocks_per_seq = (o.input_len + o.output_len + b.block_size - 1) / b.block_size;
  // CPU: exactly enough for every request at once unless told; GPU: sized from free memory.
  if (b.num_kv_blocks <= 0) b.num_kv_blocks = o.engine_flags.device == "cpu" ? blocks_per_seq * num_seqs_at_once : 0;
  // The schema and the tokenizer are checked before the weights go to the device, so a bad flag fails fast.
  *workload = make_workload(o, weights->config().vocab_size);
  engine::EngineOptions options = o.engine_flags.engine_options();
  if (!workload->guided.empty()) options.constraints = make_constraint_compiler(workload->tokenizer, weights->config().vocab_size);
  return engine::create_engine(backend::create_backend(*weights, b), options);
}

std::vector<std::vector<int32_t>> random_prompts(int count, int length, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<std::vector<int32_t>> prompts(count, std::vector<int32_t>(length));
  for (auto& p : prompts) for (auto& t : p) t = token(rng);
  return prompts;
}

// Timings of one batch of requests submitted together.
struct BatchTiming {
  double elapsed_s = 0;                  // first submit to last finish
  std::vector<double> first_token_s;     // per request, from submit
  std::vector<double> finish_s;          // per request, from submit
  // Between consecutive outputs of one request, over every request: each is one engine step's time as
  // that request saw it (a decode step once all prompts are in).
  std::vector<double> token_gap_s;
  std::vector<std::vector<int32_t>> token_ids;  // per request, what it generated
  int64_t output_tokens = 0;
};

BatchTiming run_batch(engine::Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int output_len,
                      const std::string& tag, const OfflineOptions& o, const Workload& w) {
  std::mutex mu;
  std::condition_variable done_cv;
  size_t num_done = 0;
  Status failure;
  BatchTiming timing;
  timing.first_token_s.assign(prompts.size(), -1);
  timing.finish_s.assign(prompts.size(), -1);
  timing.token_ids.resize(prompts.size());
  timing.token_gap_s.reserve(prompts.size() * static_cast<size_t>(output_len));
  std::vector<double> last_output_s(prompts.size(), -1);
  const auto start = engine::Clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    engine::Request r;
    r.request_id = tag + "-" + std::to_string(i);
    r.prompt_token_ids = prompts[i];
    r.sampling.temperature = o.temperature;
    r.sampling.top_p = o.top_p;
    r.sampling.top_k = o.top_k;
    r.sampling.seed = o.seed + i;
    r.sampling.max_tokens = output_len;
    r.sampling.ignore_eos = true;
    r.sampling.guided = w.guided;
    Status s = engine.submit(std::move(r), [&, i](engine::RequestOutput out) {
      const double t = Seconds(engine::Clock::now() - start).count();
      std::lock_guard<std::mutex> lock(mu);
      if (!out.token_ids.empty() && timing.first_token_s[i] < 0) timing.first_token_s[i] = t;
      if (!out.token_ids.empty()) {
        if (last_output_s[i] >= 0) timing.token_gap_s.push_back(t - last_output_s[i]);
        last_output_s[i] = t;
      }
      timing.output_tokens += static_cast<int64_t>(out.token_ids.size());
      timing.token_ids[i].insert(timing.token_ids[i].end(), out.token_ids.begin(), out.token_ids.end());
      if (out.finished) {
        timing.finish_s[i] = t;
        if (out.finish_reason == engine::FinishReason::kError && failure.ok()) failure = out.error;
        ++num_done;
        done_cv.notify_all();
      }
    });
    throw_if_error(s);
  }
  std::unique_lock<std::mutex> lock(mu);
  done_cv.wait(lock, [&] { return num_done == prompts.size(); });
  timing.elapsed_s = Seconds(engine::Clock::now() - start).count();
  if (!failure.ok()) throw Error("benchmark request failed: " + failure.to_string());
  return timing;
}

// Model FLOPs of prefilling `batch` prompts of `len` tokens: the projections and MLP of every token, the
// causal attention scores and weighted sums (token i attends to i + 1 keys), and one lm_head row per
// prompt. What a perfect implementation must compute; padding or recomputation does not count.
double prefill_model_flops(const model::ModelConfig& c, int batch, int len) {
  const double h = c.hidden_size, q = c.q_size(), kv = c.kv_size(), inter = c.intermediate_size;
  const double per_token = 2.0 * c.num_layers * (h * (q + 2 * kv) + q * h + 3.0 * h * inter);
  const double pairs = 0.5 * static_cast<double>(len) * (len + 1.0);  // (query, visible key) pairs
  const double attention = 4.0 * c.num_layers * c.num_heads * c.head_dim * pairs;  // QK^T and PV
  return batch * (per_token * len + attention + 2.0 * h * c.vocab_size);
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  if (values.empty()) return 0;
  const double rank = p / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(rank);
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

struct Figure {
  std::string name;
  double value;
  std::string unit;
};

// The measured requests' texts, each up to its first EOS: under a schema, the document the grammar
// closed (EOS is allowed only where the text may end). Appended to by every measured batch.
struct SavedTexts {
  std::vector<std::string> texts;
  int num_ended = 0;  // requests that drew an EOS, i.e. whose document was complete before --output-len
};

void collect_texts(const BatchTiming& t, const std::vector<int>& eos_ids, const Workload& w, SavedTexts* saved) {
  if (!w.tokenizer) return;
  for (const auto& ids : t.token_ids) {
    auto end = std::find_if(ids.begin(), ids.end(),
                            [&](int32_t id) { return std::find(eos_ids.begin(), eos_ids.end(), id) != eos_ids.end(); });
    if (end != ids.end()) ++saved->num_ended;
    saved->texts.push_back(w.tokenizer->decode(std::span<const int32_t>(ids.data(), end - ids.begin())));
  }
}

void write_texts(const OfflineOptions& o, const SavedTexts& saved) {
  if (o.save_outputs.empty()) return;
  std::ofstream out(o.save_outputs);
  for (size_t i = 0; i < saved.texts.size(); ++i) {
    out << nlohmann::json{{"request", i}, {"text", saved.texts[i]}}.dump() << "\n";
  }
  if (!out) throw Error("--save-outputs: cannot write '" + o.save_outputs + "'");
}

void write_json(const OfflineOptions& o, const std::string& bench, const std::string& device_name,
                const std::vector<Figure>& figures) {
  if (o.output_json.empty()) return;
  nlohmann::json records = nlohmann::json::array();
  for (size_t i = 0; i < figures.size(); ++i) {
    nlohmann::json r = {{"benchmark", bench}, {"figure", figures[i].name}, {"value", figures[i].value},
                        {"unit", figures[i].unit}, {"model", o.model}, {"device", device_name},
                        {"input_len", o.input_len}, {"output_len", o.output_len},
                        {"guided_json", o.guided_json_file}};
    if (bench == "throughput") r["num_prompts"] = o.num_prompts;
    else r["batch_size"] = o.batch_size;
    // The limit belongs to the headline figure, listed first.
    if (i == 0 && o.limit > 0) {
      r["limit"] = o.limit;
      r["ratio_to_limit"] = figures[i].unit == "ms" ? o.limit / figures[i].value : figures[i].value / o.limit;
    }
    records.push_back(r);
  }
  std::ofstream out(o.output_json);
  out << records.dump(2) << "\n";
  if (!out) throw Error("--output-json: cannot write '" + o.output_json + "'");
}

int run_throughput(const OfflineOptions& o) {
  Workload w;
  auto engine = make_engine(o, o.num_prompts, &w);
  const int vocab = engine->backend().config().vocab_size;
  // Warm-up: module loads, graph captures and allocator growth stay out of the measurement (and the
  // schema's grammar is compiled, as a worker's cache would hold it).
  run_batch(*engine, random_prompts(std::min(o.num_prompts, 8), std::min(o.input_len, 64), vocab, o.seed + 1),
            std::min(o.output_len, 8), "warmup", o, w);
  const auto prompts = random_prompts(o.num_prompts, o.input_len, vocab, o.seed);
  const engine::EngineStats before = engine->stats();
  BatchTiming t = run_batch(*engine, prompts, o.output_len, "throughput", o, w);
  const engine::EngineStats after = engine->stats();
  const double forward_s = after.forward_seconds - before.forward_seconds;
  const double outside_s = after.outside_forward_seconds - before.outside_forward_seconds;
  const int64_t steps = after.num_steps - before.num_steps;
  const int64_t decode_steps = after.num_decode_steps - before.num_decode_steps;
  const double decode_forward_s = after.decode_forward_seconds - before.decode_forward_seconds;
  const double decode_outside_s = after.decode_outside_forward_seconds - before.decode_outside_forward_seconds;
  const double total_tokens = static_cast<double>(o.num_prompts) * o.input_len + static_cast<double>(t.output_tokens);
  std::vector<Figure> figures = {
      {"output_throughput", static_cast<double>(t.output_tokens) / t.elapsed_s, "tok/s"},
      {"request_throughput", o.num_prompts / t.elapsed_s, "req/s"},
      {"total_token_throughput", total_tokens / t.elapsed_s, "tok/s"},
      {"elapsed", t.elapsed_s, "s"},
      {"engine_steps", static_cast<double>(steps), "steps"},
      {"engine_forward_ms_per_step", steps > 0 ? 1000.0 * forward_s / steps : 0.0, "ms"},
      {"engine_outside_forward_ms_per_step", steps > 0 ? 1000.0 * outside_s / steps : 0.0, "ms"},
      {"engine_outside_forward_share", forward_s + outside_s > 0 ? outside_s / (forward_s + outside_s) : 0.0, "fraction"},
      {"engine_decode_steps", static_cast<double>(decode_steps), "steps"},
      {"engine_decode_forward_ms_per_step", decode_steps > 0 ? 1000.0 * decode_forward_s / decode_steps : 0.0, "ms"},
      {"engine_decode_outside_forward_ms_per_step", decode_steps > 0 ? 1000.0 * decode_outside_s / decode_steps : 0.0, "ms"},
      {"engine_decode_outside_forward_share",
       decode_forward_s + decode_outside_s > 0 ? decode_outside_s / (decode_forward_s + decode_outside_s) : 0.0, "fraction"},
      {"step_ms_median", 1000.0 * percentile(t.token_gap_s, 50), "ms"},
  };
  SavedTexts saved;
  collect_texts(t, engine->backend().config().eos_token_ids, w, &saved);
  if (!w.guided.empty()) figures.push_back({"documents_ended", static_cast<double>(saved.num_ended), "requests"});
  const std::string device_name = engine->backend().device_name();
  std::printf("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s\n", figures[1].value,
              figures[2].value, figures[0].value);
  std::printf("Model %s on %s: %d prompts x %d in / %d out in %.2f s\n", o.model.c_str(), device_name.c_str(),
              o.num_prompts, o.input_len, o.output_len, t.elapsed_s);
  std::printf("Engine: %lld steps, %.3f ms/step in the backend's forward, %.3f ms/step outside it (%.1f%% of the loop)\n",
              static_cast<long long>(steps), figures[5].value, figures[6].value, 100.0 * figures[7].value);
  std::printf("Engine decode steps: %lld, %.3f ms/step in forward, %.3f ms/step outside it (%.1f%%)\n",
              static_cast<long long>(decode_steps), figures[9].value, figures[10].value, 100.0 * figures[11].value);
  std::printf("Step time between a request's tokens, median: %.3f ms\n", figures[12].value);
  if (!w.guided.empty()) {
    std::printf("Schema %s: %d of %d documents complete before --output-len\n", o.guided_json_file.c_str(), saved.num_ended,
                o.num_prompts);
  }
  if (o.limit > 0) std::printf("Ratio to the limit %.0f tok/s: %.1f%%\n", o.limit, 100.0 * figures[0].value / o.limit);
  write_json(o, "throughput", device_name, figures);
  write_texts(o, saved);
  return 0;
}

int run_latency(const OfflineOptions& o) {
  Workload w;
  auto engine = make_engine(o, o.batch_size, &w);
  const int vocab = engine->backend().config().vocab_size;
  std::vector<double> latencies, ttfts, decode_ms_per_token;
  SavedTexts saved;
  for (int iter = 0; iter < o.num_iters_warmup + o.num_iters; ++iter) {
    const auto prompts = random_prompts(o.batch_size, o.input_len, vocab, o.seed + static_cast<uint64_t>(iter));
    BatchTiming t = run_batch(*engine, prompts, o.output_len, "latency" + std::to_string(iter), o, w);
    if (iter < o.num_iters_warmup) continue;
    collect_texts(t, engine->backend().config().eos_token_ids, w, &saved);
    latencies.push_back(t.elapsed_s);
    const double ttft = *std::max_element(t.first_token_s.begin(), t.first_token_s.end());
    ttfts.push_back(ttft);
    if (o.output_len > 1) decode_ms_per_token.push_back(1000.0 * (t.elapsed_s - ttft) / (o.output_len - 1));
  }
  const std::string device_name = engine->backend().device_name();
  std::vector<Figure> figures;
  // With --output-len 1 the run is a prefill benchmark: its headline (the one --limit applies to) is the
  // model FLOP rate of the prefill, in TFLOP/s (the first token's time, engine step included).
  const double prefill_tflops =
      prefill_model_flops(engine->backend().config(), o.batch_size, o.input_len) / percentile(ttfts, 50) / 1e12;
  const bool prefill_headline = decode_ms_per_token.empty();
  if (prefill_headline) figures.push_back({"prefill_model_tflops_median", prefill_tflops, "TFLOP/s"});
  if (!decode_ms_per_token.empty()) {
    const double decode_ms = percentile(decode_ms_per_token, 50);
    figures.push_back({"decode_ms_per_token_median", decode_ms, "ms"});
    // Each decode step gives every sequence of the batch one token.
    figures.push_back({"decode_tokens_per_s", 1000.0 * o.batch_size / decode_ms, "tok/s"});
  }
  figures.push_back({"prefill_ms_median", 1000.0 * percentile(ttfts, 50), "ms"});
  figures.push_back({"prefill_tokens_per_s_median", o.batch_size * o.input_len / percentile(ttfts, 50), "tok/s"});
  if (!prefill_headline) figures.push_back({"prefill_model_tflops_median", prefill_tflops, "TFLOP/s"});
  figures.push_back({"latency_s_median", percentile(latencies, 50), "s"});
  figures.push_back({"latency_s_p90", percentile(latencies, 90), "s"});
  if (!w.guided.empty()) figures.push_back({"documents_ended", static_cast<double>(saved.num_ended), "requests"});
  std::printf("Model %s on %s: batch %d, %d in / %d out, %d iterations after %d warm-up%s%s\n", o.model.c_str(),
              device_name.c_str(), o.batch_size, o.input_len, o.output_len, o.num_iters, o.num_iters_warmup,
              w.guided.empty() ? "" : ", schema ", o.guided_json_file.c_str());
  for (const auto& f : figures) std::printf("  %-30s %12.3f %s\n", f.name.c_str(), f.value, f.unit.c_str());
  if (o.limit > 0 && !decode_ms_per_token.empty()) {
    std::printf("Ratio to the limit %.3f ms/token: %.1f%%\n", o.limit, 100.0 * o.limit / figures[0].value);
  } else if (o.limit > 0) {
    std::printf("Ratio to the limit %.1f TFLOP/s: %.1f%%\n", o.limit, 100.0 * figures[0].value / o.limit);
  }
  write_json(o, "latency", device_name, figures);
  write_texts(o, saved);
  return 0;
}

}  // namespace

Runner add_bench_throughput_command(CLI::App& bench) {
  auto o = std::make_shared<OfflineOptions>();
  CLI::App* cmd = bench.add_subcommand("throughput", "Offline throughput: N requests through the engine at once");
  add_common_flags(cmd, *o);
  cmd->add_option("--num-prompts", o->num_prompts, "Requests")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  return [o]() { return run_throughput(*o); };
}

Runner add_bench_latency_command(CLI::App& bench) {
  auto o = std::make_shared<OfflineOptions>();
  o->output_len = 128;
  CLI::App* cmd = bench.add_subcommand("latency", "Latency of one batch: prefill time and decode ms/token");
  add_common_flags(cmd, *o);
  cmd->add_option("--batch-size", o->batch_size, "Requests per batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--num-iters", o->num_iters, "Measured iterations")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--num-iters-warmup", o->num_iters_warmup, "Warm-up iterations")->capture_default_str()->check(CLI::Range(0, 100000));
  return [o]() { return run_latency(*o); };
}

}  // namespace tandem::cli
