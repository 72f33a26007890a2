// The shared engine flags of generate, worker and bench throughput|latency (see engine_flags.h).
#include "cli/engine_flags.h"

namespace tandem::cli {

const EngineFlagRules kGenerateRules = {
    .num_kv_blocks_help = "KV blocks (0 = enough for every prompt at once)",
    .gpu_memory_utilization_help = nullptr,
    .check_gpu_memory_utilization = false,
    .no_prefix_caching_help = "Disable the prefix cache",
    .check_batch_limits = true,
    .max_seqs_limit = 1 << 30,
    .vllm_names = false,
};

const EngineFlagRules kWorkerRules = {
    .num_kv_blocks_help = "KV blocks (0 = size from memory; the fake engine too)",
    .gpu_memory_utilization_help = "CUDA: fraction of the GPU memory free after the weights that the KV cache takes",
    .check_gpu_memory_utilization = false,
    .no_prefix_caching_help =
        "Disable the prefix cache (benchmarks that repeat prompts across runs measure compute, not cache hits)",
    .check_batch_limits = false,
    .max_seqs_limit = 0,
    .vllm_names = false,
};

const EngineFlagRules kBenchOfflineRules = {
    .num_kv_blocks_help = "KV blocks (0 = size the pool from memory)",
    .gpu_memory_utilization_help = "Fraction of GPU memory for weights and KV",
    .check_gpu_memory_utilization = true,
    .no_prefix_caching_help = nullptr,
    .check_batch_limits = true,
    .max_seqs_limit = 1 << 20,
    .vllm_names = true,
};

void add_engine_flags(CLI::App* cmd, EngineFlags* flags, const EngineFlagRules& rules) {
  cmd->add_option("--device", flags->device, "cpu, cuda:N, or with --tensor-parallel-size N: cuda (the first N GPUs) or cuda:N,M,...")
      ->capture_default_str();
  if (rules.gpu_memory_utilization_help != nullptr) {
    auto* gpu =
        cmd->add_option("--gpu-memory-utilization", flags->gpu_memory_utilization, rules.gpu_memory_utilization_help)
            ->capture_default_str();
    if (rules.check_gpu_memory_utilization) gpu->check(CLI::Range(0.05, 0.99));
  }
  cmd->add_option("--threads", flags->threads, "CPU threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--tensor-parallel-size", flags->tensor_parallel_size,
                  "Ranks the model is split over (Megatron-style); CPU: threads of this process, CUDA: one GPU a rank over NCCL")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  cmd->add_option("--num-kv-blocks", flags->num_kv_blocks, rules.num_kv_blocks_help)
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 30));
  auto* batch_tokens =
      cmd->add_option(rules.vllm_names ? "--max-num-batched-tokens,--max-batch-tokens" : "--max-batch-tokens",
                      flags->max_batch_tokens, "Tokens per engine step")
          ->capture_default_str();
  auto* seqs = cmd->add_option(rules.vllm_names ? "--max-num-seqs,--max-seqs" : "--max-seqs", flags->max_seqs,
                               "Sequences per engine step")
                   ->capture_default_str();
  if (rules.check_batch_limits) {
    batch_tokens->check(CLI::Range(1, 1 << 30));
    seqs->check(CLI::Range(1, rules.max_seqs_limit));
  }
  if (rules.no_prefix_caching_help != nullptr) {
    cmd->add_flag("--no-prefix-caching", flags->no_prefix_caching, rules.no_prefix_caching_help);
  }
  cmd->add_option("--quantization", flags->quantization,
                  "fp8: quantize the linear weights to FP8 per channel at load (an FP8 checkpoint is used as it "
                  "is); none: refuse a quantized checkpoint. Default: as the checkpoint's config.json says")
      ->check(CLI::IsMember({"fp8", "none"}));
  cmd->add_option("--kv-cache-dtype", flags->kv_cache_dtype,
                  "KV cache dtype. auto: fp32 on the CPU, bf16 on CUDA; fp8: e4m3 with one scale per token and KV "
                  "head (about twice the blocks of bf16; docs/quantization.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "bf16", "fp8"}));
}

backend::BackendOptions EngineFlags::backend_options() const {
  backend::BackendOptions options;
  options.device = device;
  options.num_threads = threads;
  options.num_kv_blocks = num_kv_blocks;
  options.gpu_memory_utilization = gpu_memory_utilization;
  options.tensor_parallel_size = tensor_parallel_size;
  options.quantization = quantization;
  options.kv_cache_dtype = kv_cache_dtype;
  return options;
}

engine::EngineOptions EngineFlags::engine_options() const {
  engine::EngineOptions options;
  options.max_batch_tokens = max_batch_tokens;
  options.max_seqs = max_seqs;
  options.enable_prefix_caching = !no_prefix_caching;
  return options;
}

}  // namespace tandem::cli
