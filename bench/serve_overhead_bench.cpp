// serve_overhead_bench: the CPU cost of the serving path around the engine, measured with a backend
// whose forward pass costs nothing (issue 23: `tandem serve` at 85% of the offline engine on an H200).
//
//   serve_overhead_bench offline [--num-prompts 256] [--input-len 64] [--output-len 128] [--detokenize]
//   serve_overhead_bench worker --frontend 127.0.0.1:PORT    # a decode+prefill worker for `tandem frontend`
//
// Both run the real engine (scheduler, block manager, stop rules, detokenizer) over NullBackend, which
// answers every greedy step with a token derived from the previous one and never touches logits. So the
// engine thread's time is all host work: in `offline` the engine alone (what `tandem bench throughput`
// runs, without text unless --detokenize), in `worker` the engine plus what serving adds on its thread
// (text, protobuf outputs, request-plane frames). bench/results/2026-12-02-cpu-serve-overhead/run.sh
// drives both and `tandem frontend` + `tandem bench serve`, and reads each process's CPU time.
//
// Each mode prints the engine's own accounting: host seconds per step outside the (empty) forward,
// and per output token; `worker` prints it when stopped (SIGINT/SIGTERM).
#include <CLI/CLI.hpp>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "cli/model_files.h"
#include "engine/engine.h"
#include "tokenizer/tokenizer.h"
#include "worker/worker.h"

namespace {

using namespace tandem;

// Qwen3's vocabulary and end tokens, so the frontend's real tokenizer and the worker agree.
constexpr int kVocab = 151936;

// A backend with the KV pool's geometry and nothing else: forward_greedy's tokens are a hash of the
// previous token and its position, drawn from ids 1000..50999 (ordinary BPE pieces of Qwen3, so the
// detokenizer does real work and no special token ends a stream).
class NullBackend : public backend::Backend {
 public:
  explicit NullBackend(int num_blocks) {
    config_.vocab_size = kVocab;
    config_.num_layers = 1;
    config_.max_position_embeddings = 1 << 16;
    config_.eos_token_ids = {151645, 151643};
    config_.architecture_name = "NullForCausalLM";
    spec_.num_layers = 1;
    spec_.num_blocks = num_blocks;
    spec_.block_size = 16;
    spec_.num_kv_heads = 1;
    spec_.head_dim = 1;
    pool_.assign(static_cast<size_t>(num_blocks) * spec_.block_elements(), 0.0f);  // [num_blocks, 2, 16, 1, 1] fp32, host
  }
  const model::ModelConfig& config() const override { return config_; }
  const backend::KvCacheSpec& kv_cache_spec() const override { return spec_; }
  std::string device_name() const override { return "null"; }
  static int32_t next_token(int32_t previous, int32_t position) {
    uint64_t h = (static_cast<uint64_t>(static_cast<uint32_t>(previous)) << 32) ^ static_cast<uint32_t>(position);
    h *= 0x9e3779b97f4a7c15ull;
    return 1000 + static_cast<int32_t>((h >> 33) % 50000);
  }
  Status forward_greedy(const backend::ForwardBatch& batch, std::span<int32_t> tokens) override {
    for (int i = 0; i < batch.num_logits(); ++i) {
      const int32_t at = batch.logits_indices[i];
      tokens[i] = next_token(batch.token_ids[at], batch.positions[at]);
    }
    return Status::Ok();
  }
  // The host sampler's path (not taken by greedy requests): a one-hot row at the same token.
  Status forward(const backend::ForwardBatch& batch, std::span<float> logits) override {
    for (int i = 0; i < batch.num_logits(); ++i) {
      std::span<float> row = logits.subspan(static_cast<size_t>(i) * kVocab, kVocab);
      std::fill(row.begin(), row.end(), 0.0f);
      const int32_t at = batch.logits_indices[i];
      row[next_token(batch.token_ids[at], batch.positions[at])] = 1.0f;
    }
    return Status::Ok();
  }
  Status read_kv_block(int layer, int block, std::span<std::byte> out) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, out.size()));
    std::memcpy(out.data(), pool_.data() + block * spec_.block_elements(), out.size());
    return Status::Ok();
  }
  Status write_kv_block(int layer, int block, std::span<const std::byte> in) override {
    TANDEM_RETURN_IF_ERROR(check(layer, block, in.size()));
    std::memcpy(pool_.data() + block * spec_.block_elements(), in.data(), in.size());
    return Status::Ok();
  }

 private:
  Status check(int layer, int block, size_t size) const {
    if (layer != 0 || block < 0 || block >= spec_.num_blocks) return Status::InvalidArgument("block out of range");
    if (size != spec_.block_bytes()) return Status::InvalidArgument("buffer is not one block");
    return Status::Ok();
  }
  model::ModelConfig config_;
  backend::KvCacheSpec spec_;
  std::vector<float> pool_;
};

struct Options {
  std::string tokenizer = "data/tokenizers/qwen3";
  int num_blocks = 65536;
  int max_batch_tokens = 2048;  // tandem worker's default (`tandem bench throughput` uses 8192)
  int max_seqs = 256;
  bool no_prefix_caching = false;
  // offline
  int num_prompts = 256;
  int input_len = 64;
  int output_len = 128;
  int runs = 3;
  bool detokenize = false;
  // worker
  std::string frontend;
  std::string model_name = "null";
};

std::shared_ptr<engine::TextStreamFactory> text_streams(const Options& o) {
  return std::make_shared<cli::DetokenizerStreams>(tokenizer::Tokenizer::load(o.tokenizer));
}

std::unique_ptr<engine::Engine> make_engine(const Options& o, std::shared_ptr<engine::TextStreamFactory> text) {
  engine::EngineOptions e;
  e.max_batch_tokens = o.max_batch_tokens;
  e.max_seqs = o.max_seqs;
  e.enable_prefix_caching = !o.no_prefix_caching;
  return engine::create_engine(std::make_unique<NullBackend>(o.num_blocks), e, std::move(text));
}

void print_engine_cost(const engine::EngineStats& before, const engine::EngineStats& after, int64_t tokens) {
  const int64_t steps = after.num_steps - before.num_steps;
  const double outside = after.outside_forward_seconds - before.outside_forward_seconds;
  const double forward = after.forward_seconds - before.forward_seconds;
  std::printf("engine: %lld steps, %.1f us/step outside the forward, %.1f us/step in it; %.3f us per output token on the engine thread\n",
              static_cast<long long>(steps), steps ? outside / steps * 1e6 : 0.0, steps ? forward / steps * 1e6 : 0.0,
              tokens ? (outside + forward) / static_cast<double>(tokens) * 1e6 : 0.0);
}

// As `tandem bench throughput`: every prompt submitted at once, first submit to last finish.
int run_offline(const Options& o) {
  auto engine = make_engine(o, o.detokenize ? text_streams(o) : nullptr);
  std::mt19937_64 rng(0);
  std::uniform_int_distribution<int32_t> token(0, kVocab - 1);
  for (int run = 0; run < o.runs; ++run) {
    std::mutex mu;
    std::condition_variable cv;
    int done = 0;
    int64_t tokens = 0;
    const engine::EngineStats before = engine->stats();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < o.num_prompts; ++i) {
      engine::Request r;
      r.request_id = "r" + std::to_string(run) + "-" + std::to_string(i);
      r.prompt_token_ids.resize(o.input_len);
      for (auto& t : r.prompt_token_ids) t = token(rng);
      r.sampling.temperature = 0;
      r.sampling.max_tokens = o.output_len;
      r.sampling.ignore_eos = true;
      Status s = engine->submit(std::move(r), [&](engine::RequestOutput out) {
        std::lock_guard<std::mutex> lock(mu);
        tokens += static_cast<int64_t>(out.token_ids.size());
        if (out.finished) {
          ++done;
          cv.notify_all();
        }
      });
      if (!s.ok()) {
        std::fprintf(stderr, "submit failed: %s\n", s.to_string().c_str());
        return 1;
      }
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == o.num_prompts; });
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    lock.unlock();
    std::printf("offline run %d: %d x %d/%d, %lld output tokens in %.3f s: %.0f output tok/s\n", run, o.num_prompts,
                o.input_len, o.output_len, static_cast<long long>(tokens), elapsed, tokens / elapsed);
    print_engine_cost(before, engine->stats(), tokens);
    std::fflush(stdout);
  }
  return 0;
}

std::atomic<tandem::worker::Worker*> g_worker{nullptr};

int run_worker(const Options& o) {
  // Blocked in every thread; a thread of our own waits for them and asks the worker to stop.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int signo = 0;
    while (sigwait(&set, &signo) == 0) {
      if (auto* w = g_worker.load()) w->request_stop();
    }
  }).detach();
  auto engine = make_engine(o, text_streams(o));
  engine::Engine* e = engine.get();
  worker::WorkerOptions w;
  w.role = worker::Role::kBoth;
  w.model_name = o.model_name;
  w.frontend = o.frontend;
  w.prefix_caching = !o.no_prefix_caching;
  w.drain_timeout_ms = 1000;
  worker::Worker worker(w, std::move(engine));
  const engine::EngineStats before = e->stats();
  g_worker.store(&worker);
  worker.run();
  g_worker.store(nullptr);
  const engine::EngineStats after = e->stats();
  print_engine_cost(before, after, after.generation_tokens_total - before.generation_tokens_total);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU cost of the serving path over a backend that computes nothing"};
  Options o;
  app.require_subcommand(1);
  for (CLI::App* cmd : {app.add_subcommand("offline", "the engine alone, as tandem bench throughput"),
                        app.add_subcommand("worker", "a worker (role both) registering with --frontend")}) {
    cmd->add_option("--tokenizer", o.tokenizer, "Tokenizer directory (Qwen3's vocabulary)")->capture_default_str();
    cmd->add_option("--num-kv-blocks", o.num_blocks, "KV blocks of 16 tokens")->capture_default_str();
    cmd->add_option("--max-batch-tokens", o.max_batch_tokens, "Tokens per engine step")->capture_default_str();
    cmd->add_option("--max-seqs", o.max_seqs, "Sequences per engine step")->capture_default_str();
    cmd->add_flag("--no-prefix-caching", o.no_prefix_caching, "Disable the prefix cache");
  }
  CLI::App* offline = app.get_subcommand("offline");
  offline->add_option("--num-prompts", o.num_prompts)->capture_default_str();
  offline->add_option("--input-len", o.input_len)->capture_default_str();
  offline->add_option("--output-len", o.output_len)->capture_default_str();
  offline->add_option("--runs", o.runs)->capture_default_str();
  offline->add_flag("--detokenize", o.detokenize, "Give the engine text streams, as a worker does");
  CLI::App* worker = app.get_subcommand("worker");
  worker->add_option("--frontend", o.frontend, "host:port of the frontend's registry")->required();
  worker->add_option("--served-model-name", o.model_name)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return offline->parsed() ? run_offline(o) : run_worker(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve_overhead_bench: %s\n", e.what());
    return 1;
  }
}
