// Helpers of the CUDA kernel tests (cuda_kernels_test's sources): skip without a GPU, check launches,
// mirror device buffers, random bf16 inputs and the relative error against a double-precision reference.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

using bf16 = __nv_bfloat16;

#define GPU_OR_SKIP()                                                          \
  do {                                                                         \
    int count_ = 0;                                                            \
    if (cudaGetDeviceCount(&count_) != cudaSuccess || count_ == 0) {           \
      cudaGetLastError();                                                      \
      GTEST_SKIP() << "no CUDA device";                                        \
    }                                                                          \
  } while (0)

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// The kernels are launched plainly (no programmatic dependent launch): each test checks one launcher's
// results on its own. The backend's own launches (PDL on sm_90+) run in cuda_backend_test.
constexpr LaunchOptions kPlain{};

// Host mirror of a device buffer; poisoned device memory unless uploaded.
template <typename T>
struct DeviceVec {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceVec(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemset(ptr, 0xff, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);  // NaN-poisoned for floats
  }
  explicit DeviceVec(const std::vector<T>& host) : DeviceVec(host.size()) { upload(host); }
  ~DeviceVec() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) { EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> download() const {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
};

inline std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<bf16> out(n);
  for (auto& v : out) v = __float2bfloat16(dist(rng));
  return out;
}

inline std::vector<float> to_float(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

}  // namespace tandem::backend::cuda
