// Warp-level helpers shared by the kernels of this backend: a warp is 32 lanes, and the reductions
// shuffle across all of them.
#pragma once

#include <cuda_runtime.h>

namespace tandem::backend::cuda {

constexpr int kWarp = 32;  // lanes in a warp

// The sum over the warp's 32 lanes; every lane gets it. REQUIRES: all 32 lanes active.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The maximum over the warp's 32 lanes; every lane gets it. REQUIRES: all 32 lanes active.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

}  // namespace tandem::backend::cuda
