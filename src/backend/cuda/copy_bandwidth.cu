// Reference copy bandwidth for the KV transfer benchmark (bench/kv_transfer_bench.cpp): what a plain
// cudaMemcpy (one device) or cudaMemcpyPeer (two devices) of the same bytes reaches on this machine.
#include <cuda_runtime.h>

#include <algorithm>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.cuh"

namespace tandem::backend::cuda {

double measure_device_copy_gbps(int src_device, int dst_device, size_t num_bytes, int iters) {
  void* src = nullptr;
  void* dst = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  TANDEM_CUDA_THROW(cudaSetDevice(dst_device), dst_device);
  TANDEM_CUDA_THROW(cudaMalloc(&dst, num_bytes), dst_device);
  TANDEM_CUDA_THROW(cudaSetDevice(src_device), src_device);
  TANDEM_CUDA_THROW(cudaMalloc(&src, num_bytes), src_device);
  TANDEM_CUDA_THROW(cudaMemset(src, 1, num_bytes), src_device);
  if (src_device != dst_device) {
    int can = 0;
    TANDEM_CUDA_THROW(cudaDeviceCanAccessPeer(&can, src_device, dst_device), src_device);
    // Without peer access cudaMemcpyPeer still works (staged through the host): the figure says so.
    if (can) {
      cudaError_t err = cudaDeviceEnablePeerAccess(dst_device, 0);
      if (err != cudaSuccess && err != cudaErrorPeerAccessAlreadyEnabled) TANDEM_CUDA_THROW(err, src_device);
      cudaGetLastError();
    }
  }
  TANDEM_CUDA_THROW(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), src_device);
  TANDEM_CUDA_THROW(cudaEventCreate(&start), src_device);
  TANDEM_CUDA_THROW(cudaEventCreate(&stop), src_device);
  auto copy = [&] {
    if (src_device == dst_device) {
      TANDEM_CUDA_THROW(cudaMemcpyAsync(dst, src, num_bytes, cudaMemcpyDeviceToDevice, stream), src_device);
    } else {
      TANDEM_CUDA_THROW(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, num_bytes, stream), src_device);
    }
  };
  copy();  // warm-up
  TANDEM_CUDA_THROW(cudaStreamSynchronize(stream), src_device);
  float best_ms = 0;
  for (int i = 0; i < std::max(1, iters); ++i) {
    TANDEM_CUDA_THROW(cudaEventRecord(start, stream), src_device);
    copy();
    TANDEM_CUDA_THROW(cudaEventRecord(stop, stream), src_device);
    TANDEM_CUDA_THROW(cudaEventSynchronize(stop), src_device);
    float ms = 0;
    TANDEM_CUDA_THROW(cudaEventElapsedTime(&ms, start, stop), src_device);
    if (i == 0 || ms < best_ms) best_ms = ms;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  cudaFree(src);
  cudaSetDevice(dst_device);
  cudaFree(dst);
  cudaSetDevice(src_device);
  return static_cast<double>(num_bytes) / (best_ms * 1e-3) / 1e9;
}

}  // namespace tandem::backend::cuda
