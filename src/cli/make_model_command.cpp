// `tandem make-model`: writes a random-weight model of a preset shape as a Hugging Face directory, in
// bf16/fp16/fp32 or in one of the two FP8 checkpoint formats (model/quantization.h).
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "common/error.h"
#include "model/presets.h"
#include "model/random_weights.h"
#include "model/safetensors_writer.h"

namespace tandem::cli {
namespace {

struct MakeModelOptions {
  std::string preset;
  std::string out;
  std::string dtype = "bf16";
  uint64_t seed = 0;
  double max_shard_gb = 5.0;
};

}  // namespace

Runner add_make_model_command(CLI::App& app) {
  auto opts = std::make_shared<MakeModelOptions>();
  CLI::App* cmd = app.add_subcommand("make-model", "Write a random-weight model as a Hugging Face directory");
  std::string presets;
  for (const auto& p : model::preset_names()) presets += (presets.empty() ? "" : ", ") + p;
  cmd->add_option("--preset", opts->preset, "Model shape: " + presets)->required();
  cmd->add_option("--out", opts->out, "Output directory")->required();
  cmd->add_option("--dtype", opts->dtype,
                  "bf16, fp16, fp32, fp8-block (quant_method fp8, 128x128 block scales, as Qwen3-*-FP8) or "
                  "fp8-channel (compressed-tensors, per-channel scales, as RedHat's Llama-3.1 FP8); FP8 "
                  "quantizes the linear projections and keeps the rest in bf16")
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "Weight seed (random:<preset> with the same seed gives the same weights)")->capture_default_str();
  cmd->add_option("--max-shard-gb", opts->max_shard_gb, "Largest shard in GB; larger models are sharded with an index")->capture_default_str();
  return [opts]() {
    model::DType dtype = model::DType::kBF16;
    model::QuantizationConfig quantization;
    quantization.unquantized_modules = {"lm_head"};
    if (opts->dtype == "bf16") dtype = model::DType::kBF16;
    else if (opts->dtype == "fp16") dtype = model::DType::kF16;
    else if (opts->dtype == "fp32") dtype = model::DType::kF32;
    else if (opts->dtype == "fp8-block") {
      quantization.method = model::QuantizationConfig::Method::kFp8Block;
      quantization.weight_scheme = model::Fp8Scheme::kBlock;
    } else if (opts->dtype == "fp8-channel") {
      quantization.method = model::QuantizationConfig::Method::kCompressedTensors;
      quantization.weight_scheme = model::Fp8Scheme::kChannel;
    } else {
      throw Error("--dtype: unknown dtype '" + opts->dtype + "' (use bf16, fp16, fp32, fp8-block or fp8-channel)");
    }
    if (opts->max_shard_gb <= 0) throw Error("--max-shard-gb must be positive");
    model::RandomWeights weights(model::preset_config(opts->preset), opts->seed, "random:" + opts->preset);
    auto start = std::chrono::steady_clock::now();
    model::write_model_directory(weights, opts->out, dtype, static_cast<size_t>(opts->max_shard_gb * 1e9),
                                 quantization);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %s (%s, %s) in %.1f s\n", opts->out.c_str(), opts->preset.c_str(), opts->dtype.c_str(), seconds);
    return 0;
  };
}

}  // namespace tandem::cli
