// How a model's linear weights are quantized: config.json's "quantization_config" (block FP8 as Qwen and
// DeepSeek publish it, compressed-tensors float-quantized FP8 as RedHat/neuralmagic publish it), or
// `--quantization fp8` applied at load to a bf16 checkpoint. Anything else is refused at parse time
// with the offending field named: a format we cannot read exactly must never load with wrong numbers.
// Plain values and free functions; thread-safe.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "model/fp8.h"

namespace tandem::model {

struct QuantizationConfig {
  enum class Method {
    kNone,
    kFp8Block,           // quant_method "fp8" with weight_block_size
    kCompressedTensors,  // quant_method "compressed-tensors", format "float-quantized", 8-bit float
    kOnlineFp8,          // --quantization fp8 on an unquantized checkpoint: per-channel at load
  } method = Method::kNone;
  Fp8Scheme weight_scheme = Fp8Scheme::kChannel;
  int block_rows = 128;  // kFp8Block
  int block_cols = 128;
  // Activation scales: dynamic (per token, computed at run time) or static (per tensor, the
  // checkpoint's input_scale). The fp32 CPU reference does not quantize activations either way.
  bool static_activations = false;
  // modules_to_not_convert / ignore, as written (e.g. "lm_head"). Informational: whether a tensor is
  // FP8 is read from its dtype in the checkpoint, and an FP8 tensor always needs its scale.
  std::vector<std::string> unquantized_modules;

  bool is_fp8() const { return method != Method::kNone; }
  // The scale tensor's suffix beside "weight": "weight_scale_inv" (block) or "weight_scale".
  std::string scale_suffix() const;
  // For logs and errors: "fp8 block 128x128, dynamic activations", "fp8 per-channel (online)".
  std::string describe() const;
};

// Parses config.json's "quantization_config". Throws tandem::Error naming `source` and the field for
// anything unsupported (another quant_method, int8, another block size, fmt other than e4m3, ...).
QuantizationConfig parse_quantization_config(const nlohmann::json& json, const std::string& source);
// The "quantization_config" object that parses back to `config` (what make-model writes).
// REQUIRES: method is kFp8Block or kCompressedTensors.
nlohmann::json quantization_config_to_json(const QuantizationConfig& config);

// The projections FP8 applies to (q/k/v/o, gate/up/down of every layer); embeddings, norms and lm_head
// stay in their checkpoint dtype.
bool is_quantizable_linear(const std::string& tensor_name);

// Checks a --quantization value ("" = as the checkpoint says, "fp8", "none") against the checkpoint's
// quantization; throws tandem::Error naming the flag and `model` when they disagree or the value is
// unknown. Returns the effective config: the checkpoint's, or kOnlineFp8 per-channel for "fp8" on an
// unquantized checkpoint.
QuantizationConfig resolve_quantization_flag(const std::string& flag, const QuantizationConfig& checkpoint,
                                             const std::string& model);

}  // namespace tandem::model
