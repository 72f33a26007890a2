// The engine flags that `tandem generate`, `tandem worker` and `tandem bench throughput|latency` share
// (--device, --gpu-memory-utilization, --threads, --num-kv-blocks, --max-batch-tokens, --max-seqs,
// --no-prefix-caching, --tensor-parallel-size, --quantization, --kv-cache-dtype): declared once here, with
// what still differs between the commands spelled out in EngineFlagRules, and turned into the backend's and
// the engine's options in one place.
//
// Ownership: the command owns its EngineFlags; CLI11 writes into it while parsing, so it must outlive the
// parse (keep it beside the command's other options, e.g. in the struct its runner captures).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "backend/backend.h"
#include "engine/engine.h"

namespace tandem::cli {

// The flags' values. A command that wants another default sets it before add_engine_flags, which shows
// the value it finds as the default in --help.
struct EngineFlags {
  std::string device = "cpu";
  double gpu_memory_utilization = 0.9;
  int threads = 0;
  int num_kv_blocks = 0;
  int max_batch_tokens = 2048;
  int max_seqs = 256;
  bool no_prefix_caching = false;
  int tensor_parallel_size = 1;
  std::string quantization = "";  // --quantization: "" = as the checkpoint says, "fp8", "none"
  std::string kv_cache_dtype = "auto";  // --kv-cache-dtype: "auto", "bf16", "fp8"

  // device, threads, num_kv_blocks, gpu_memory_utilization, tensor_parallel_size, quantization and
  // kv_cache_dtype; block size and the rest stay at their defaults. A command that sizes the pool itself
  // when num_kv_blocks is 0 overwrites num_kv_blocks.
  backend::BackendOptions backend_options() const;
  // max_batch_tokens, max_seqs and prefix caching (on unless --no-prefix-caching).
  engine::EngineOptions engine_options() const;
};

// What differs between the commands today, kept as each command had it when the flags were merged (the
// help of --num-kv-blocks says what 0 means for that command; the worker never range-checked its batch
// limits). The three commands' rules are kGenerateRules, kWorkerRules and kBenchOfflineRules.
struct EngineFlagRules {
  const char* num_kv_blocks_help;
  // nullptr: the command has no --gpu-memory-utilization (generate leaves the backend's default).
  const char* gpu_memory_utilization_help;
  bool check_gpu_memory_utilization;  // Range(0.05, 0.99)
  // nullptr: the command has no --no-prefix-caching (its EngineFlags value is used as it is).
  const char* no_prefix_caching_help;
  bool check_batch_limits;  // --max-batch-tokens in [1, 2^30], --max-seqs in [1, max_seqs_limit]
  int max_seqs_limit;
  bool vllm_names;  // also --max-num-batched-tokens and --max-num-seqs, as vLLM's benchmarks name them
};

extern const EngineFlagRules kGenerateRules;
extern const EngineFlagRules kWorkerRules;
extern const EngineFlagRules kBenchOfflineRules;

// Declares the engine flags on `cmd`, writing into `flags`.
void add_engine_flags(CLI::App* cmd, EngineFlags* flags, const EngineFlagRules& rules);

}  // namespace tandem::cli
