// OnlineFp8Weights: `--quantization fp8` on an unquantized model. Wraps another WeightSource and
// quantizes each linear projection (is_quantizable_linear) to FP8 e4m3 with one scale per output row
// (amax / 448) when it is read, as vLLM's online FP8 does; every other tensor passes through. read()
// returns the dequantized values, so an fp32 backend computes with exactly the FP8-rounded weights.
// Holds a reference to `base`, which must outlive it. Thread-safety as `base`.
#pragma once

#include "model/weight_source.h"

namespace tandem::model {

class OnlineFp8Weights : public WeightSource {
 public:
  explicit OnlineFp8Weights(const WeightSource& base);

  const ModelConfig& config() const override { return config_; }
  std::string describe() const override;
  void validate() const override { base_.validate(); }
  void read(const TensorSpec& spec, DType out_dtype, void* out) const override;
  std::optional<QuantizedWeight> read_quantized(const TensorSpec& spec) const override;

 private:
  const WeightSource& base_;
  ModelConfig config_;  // base's, with quantization kOnlineFp8
};

}  // namespace tandem::model
