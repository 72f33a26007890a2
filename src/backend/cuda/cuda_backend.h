// The CUDA backend's entry points for code outside src/backend/cuda (plain C++: no CUDA header here,
// STYLE.md "Layout"). The backend itself (CudaBackend, cuda_backend_impl.cuh) keeps bf16 weights (or FP8
// projections, docs/quantization.md) and a bf16 paged KV cache on one GPU and computes in fp32; see
// backend.h for the interface and its thread-safety.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace tandem::backend::cuda {

// Loads `weights` onto the GPU named by options.device ("cuda" or "cuda:N"), sizes the KV pool from the
// free memory times options.gpu_memory_utilization (or takes options.num_kv_blocks) and logs its blocks
// and tokens. Throws tandem::Error naming the device, the memory asked and free, and the flag to change.
std::unique_ptr<Backend> create_cuda_backend(const model::WeightSource& weights, const BackendOptions& options);

// The tensor-parallel path (tensor_parallel_backend.cu): options.tensor_parallel_size ranks, one per GPU
// of options.device ("cuda": the first N visible; "cuda:2,3": those), over NCCL. Taken for every
// tensor_parallel_size > 1 and, at 1, by tests that check it against the plain backend. Throws
// tandem::Error naming the flag (devices, a model that does not split, NCCL missing or failing).
std::unique_ptr<Backend> create_tensor_parallel_cuda_backend(const model::WeightSource& weights, const BackendOptions& options);

// CUDA devices this process can use; 0 when there is no driver or no device. Never throws.
int cuda_device_count();

// GB/s (1e9 bytes/s) of one plain copy of `num_bytes` from a buffer on src_device to one on dst_device:
// cudaMemcpy device-to-device on one GPU, cudaMemcpyPeer between two (peer access enabled when the GPUs
// allow it). Best of `iters` copies timed with CUDA events, after one warm-up. The reference figure of
// bench/kv_transfer_bench. Throws tandem::Error naming the call and the device on a CUDA failure.
double measure_device_copy_gbps(int src_device, int dst_device, size_t num_bytes, int iters);

// TFLOP/s of the FP8 GEMM the backend uses for prefill (cuBLASLt e4m3 x e4m3 -> bf16, per-row scales):
// [m, k] x [n, k]^T, `iters` runs timed with CUDA events after one warm-up. The reference rate of the FP8
// prefill figure (docs/quantization.md). Throws tandem::Error when cuBLASLt has no such GEMM.
double measure_fp8_gemm_tflops(int device, int m, int n, int k, int iters);

}  // namespace tandem::backend::cuda
