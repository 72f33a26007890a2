// Writing safetensors files and whole Hugging Face model directories (config.json, one
// model.safetensors or shards with model.safetensors.index.json), as save_pretrained lays them out,
// so that transformers loads what we write. Tensors are produced one at a time through a callback,
// so a 16 GB model never sits in host memory whole.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "model/quantization.h"
#include "model/tensor.h"
#include "model/weight_source.h"

namespace tandem::model {

struct TensorToWrite {
  std::string name;
  DType dtype;
  Shape shape;
};

// Fills `out` (num_elements(shape) * dtype_size(dtype) bytes) with the tensor's data.
using TensorFiller = std::function<void(const TensorToWrite& tensor, std::byte* out)>;

// Writes one safetensors file. Throws tandem::Error naming the path on I/O failure.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const TensorFiller& fill);

// Writes `source`'s config and weights as a Hugging Face directory in `dtype`, in shards of at most
// `max_shard_bytes` (a single model.safetensors when everything fits in one). Creates `dir`.
// With `quantization` kFp8Block or kCompressedTensors, the linear projections (is_quantizable_linear) are
// quantized (quantize_fp8) and written as F8_E4M3 plus their F32 scale tensor, as the published FP8
// checkpoints lay them out, and config.json carries the quantization_config; everything else is `dtype`.
void write_model_directory(const WeightSource& source, const std::filesystem::path& dir, DType dtype,
                           size_t max_shard_bytes, const QuantizationConfig& quantization = {});

}  // namespace tandem::model
