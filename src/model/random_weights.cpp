#include "model/random_weights.h"

#include <cmath>
#include <vector>

#include "common/random.h"

namespace tandem::model {
namespace {

constexpr size_t kChunkElements = 1 << 16;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Distribution {
  float mean;
  float stddev;
};

Distribution distribution_for(const TensorSpec& spec, const ModelConfig& c) {
  const std::string& n = spec.name;
  if (ends_with(n, "norm.weight")) return {1.0f, 0.1f};
  if (ends_with(n, ".bias")) return {0.0f, 0.1f};
  if (n == "model.embed_tokens.weight" || n == "lm_head.weight") {
    return {0.0f, 2.0f / std::sqrt(static_cast<float>(c.hidden_size))};
  }
  const float fan_in = static_cast<float>(spec.shape.back());
  return {0.0f, 1.0f / std::sqrt(fan_in)};
}

}  // namespace

RandomWeights::RandomWeights(ModelConfig config, uint64_t seed, std::string description)
    : config_(std::move(config)), seed_(seed), description_(std::move(description)) {}

std::string RandomWeights::describe() const {
  return description_ + " seed=" + std::to_string(seed_);
}

void RandomWeights::read(const TensorSpec& spec, DType out_dtype, void* out) const {
  const Distribution dist = distribution_for(spec, config_);
  // Uniform on [mean - a, mean + a] has standard deviation a / sqrt(3).
  const float half_width = dist.stddev * std::sqrt(3.0f);
  const size_t count = static_cast<size_t>(num_elements(spec.shape));
  const size_t num_chunks = (count + kChunkElements - 1) / kChunkElements;
  const uint64_t tensor_seed = seed_ ^ fnv1a64(spec.name);
  const size_t out_element_bytes = dtype_size(out_dtype);
#pragma omp parallel
  {
    std::vector<float> chunk(kChunkElements);
#pragma omp for schedule(static)
    for (size_t c = 0; c < num_chunks; ++c) {
      // Seed each chunk's stream from a hash of (tensor, chunk): seeding with tensor_seed + k * step
      // would make chunk c+1's stream chunk c's shifted by one draw (duplicate embedding rows).
      SplitMix64 seeder(tensor_seed ^ (0xd1b54a32d192ed03ull * (c + 1)));
      SplitMix64 rng(seeder.next());
      const size_t begin = c * kChunkElements;
      const size_t n = std::min(kChunkElements, count - begin);
      for (size_t i = 0; i < n; ++i) chunk[i] = dist.mean + half_width * (2.0f * rng.uniform() - 1.0f);
      convert_elements(DType::kF32, chunk.data(), out_dtype,
                       static_cast<std::byte*>(out) + begin * out_element_bytes, n);
    }
  }
}

}  // namespace tandem::model
