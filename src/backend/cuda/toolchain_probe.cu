// Proves the CUDA toolchain path of the build (nvcc, sm_90a + sm_80 + PTX): a trivial kernel and a
// host entry that reports the devices it sees. The real CUDA backend replaces this.
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/toolchain_probe.h"

namespace tandem::backend::cuda {
namespace {

__global__ void add_one(int* value) { *value += 1; }

}  // namespace

std::string probe_cuda() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no usable CUDA device: ") + cudaGetErrorString(err);
  int* device_value = nullptr;
  if ((err = cudaMalloc(&device_value, sizeof(int))) != cudaSuccess) return std::string("cudaMalloc: ") + cudaGetErrorString(err);
  int host_value = 41;
  cudaMemcpy(device_value, &host_value, sizeof(int), cudaMemcpyHostToDevice);
  add_one<<<1, 1>>>(device_value);
  err = cudaMemcpy(&host_value, device_value, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(device_value);
  if (err != cudaSuccess) return std::string("kernel launch: ") + cudaGetErrorString(err);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  return std::to_string(count) + " CUDA device(s); device 0: " + prop.name + " sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + "; kernel check " + (host_value == 42 ? "ok" : "FAILED");
}

}  // namespace tandem::backend::cuda
