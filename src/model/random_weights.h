// RandomWeights: a WeightSource with seeded random weights, generated on read (no host copy of the
// whole model). The same (config, seed) gives the same tensors on every machine, in any read order
// and at any thread count: each 64K-element chunk of a tensor has its own stream.
// Scales keep activations O(1) through the layers and logits peaked enough that greedy decoding is
// not a coin toss: linear weights ~ U with std 1/sqrt(fan_in), norm weights 1 ± 0.1, biases std 0.1,
// embeddings std 2/sqrt(hidden) (so tied-embedding logits have std ~2).
#pragma once

#include <string>

#include "model/presets.h"
#include "model/weight_source.h"

namespace tandem::model {

class RandomWeights : public WeightSource {
 public:
  RandomWeights(ModelConfig config, uint64_t seed, std::string description);

  const ModelConfig& config() const override { return config_; }
  std::string describe() const override;
  void validate() const override {}
  void read(const TensorSpec& spec, DType out_dtype, void* out) const override;

 private:
  ModelConfig config_;
  uint64_t seed_;
  std::string description_;
};

}  // namespace tandem::model
