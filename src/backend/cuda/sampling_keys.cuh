// The order the sampling kernel ranks tokens in (sampling.cu), as one 64-bit key per token: the host
// sampler's sort order, logit descending, then id ascending. Host and device, so the order itself is
// unit-tested without a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace tandem::backend::cuda {

// Float bits mapped so that unsigned order is float order. -0 and +0 map alike: they compare equal,
// and the host sampler then orders them by id (with distinct keys the two disagreed on tied rows).
__host__ __device__ inline uint32_t ordered_bits(float x) {
  uint32_t b;
#ifdef __CUDA_ARCH__
  b = __float_as_uint(x);
#else
  std::memcpy(&b, &x, sizeof(b));
#endif
  if ((b & 0x7fffffffu) == 0) b = 0;  // -0 -> +0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Larger key = earlier in the host sampler's order: higher logit, then lower id. Unique per token.
__host__ __device__ inline uint64_t order_key(float x, int id) {
  return (static_cast<uint64_t>(ordered_bits(x)) << 32) | static_cast<uint32_t>(0xffffffffu - static_cast<uint32_t>(id));
}

__host__ __device__ inline int id_of_key(uint64_t key) { return static_cast<int>(0xffffffffu - static_cast<uint32_t>(key)); }

}  // namespace tandem::backend::cuda
