// WeightSource: where a backend reads a model's weights from, tensor by tensor, converted to the
// element type the backend stores. Implemented by a Hugging Face checkpoint on disk (mmap) and by
// seeded random weights generated in memory. The source validates every tensor a config needs up
// front (validate()), so a missing tensor or a wrong shape fails before any memory is allocated.
// Thread-safety: read() may be called from several threads at once for different tensors.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/fp8.h"
#include "model/tensor.h"

namespace tandem::model {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual const ModelConfig& config() const = 0;
  // Where the weights come from, for logs ("/models/Qwen3-0.6B", "random:qwen3-0.6b seed=0").
  virtual std::string describe() const = 0;
  // Throws tandem::Error naming the file and tensor for the first missing, misshapen or
  // unsupported-dtype tensor among expected_tensors(config()).
  virtual void validate() const = 0;
  // Writes tensor `name` (REQUIRES: one of expected_tensors(config())) as `out_dtype`, row-major,
  // into `out`, which holds num_elements(shape) elements.
  // An FP8 tensor (config().quantization says which) is dequantized to `out_dtype`: FP8 value times scale.
  virtual void read(const TensorSpec& spec, DType out_dtype, void* out) const = 0;
  // The tensor as stored when it is FP8 (its bytes and scales, for a backend that computes in FP8);
  // nullopt when it is stored unquantized. Same REQUIRES as read().
  virtual std::optional<QuantizedWeight> read_quantized(const TensorSpec& spec) const {
    (void)spec;
    return std::nullopt;
  }
};

// Every tensor a model of `config` reads, with the Hugging Face names and shapes:
// model.embed_tokens.weight [vocab, hidden], per layer the norms, q/k/v/o and gate/up/down
// projections (q/k/v biases, q_norm/k_norm where the architecture has them), model.norm.weight,
// and lm_head.weight [vocab, hidden] unless the embeddings are tied.
std::vector<TensorSpec> expected_tensors(const ModelConfig& config);

// Element-wise conversion between the checkpoint element types.
void convert_elements(DType from, const void* in, DType to, void* out, size_t count);

// Opens `model` as given on the command line: "random:<preset>" or a Hugging Face directory.
// Throws tandem::Error with an actionable message.
std::unique_ptr<WeightSource> open_weight_source(const std::string& model, uint64_t seed = 0);

}  // namespace tandem::model
