// Deterministic, splittable random numbers for random-weight models and tests.
// SplitMix64 per stream: the same (seed, stream) gives the same numbers on every machine and in any
// order of generation, so tensors can be generated lazily (e.g. straight into GPU staging buffers).
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace tandem {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 24 bits of precision.
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  // Standard normal (Box-Muller; one of the pair is discarded to keep the stream position simple).
  float normal() {
    float u1 = (static_cast<float>(next() >> 40) + 1.0f) * (1.0f / 16777217.0f);
    float u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530717958647692f * u2);
  }

 private:
  uint64_t state_;
};

// FNV-1a, for deriving a stream seed from a tensor name.
inline uint64_t fnv1a64(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : text) { hash ^= c; hash *= 0x100000001b3ull; }
  return hash;
}

}  // namespace tandem
