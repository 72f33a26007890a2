// Checking CUDA and cuBLAS calls (STYLE.md "Errors": every call and launch is checked, and a failure
// names the call and the device). Two flavours: at startup a failure throws tandem::Error; during a
// step it becomes Status::Internal, so the engine fails the step's requests instead of crashing.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/error.h"
#include "common/status.h"

namespace tandem::backend::cuda {

inline std::string cuda_failure(const char* call, int device, cudaError_t err) {
  return std::string(call) + " failed on cuda:" + std::to_string(device) + ": " + cudaGetErrorName(err) + " (" +
         cudaGetErrorString(err) + ")";
}

inline std::string cublas_failure(const char* call, int device, cublasStatus_t st) {
  return std::string(call) + " failed on cuda:" + std::to_string(device) + ": " + cublasGetStatusName(st) + " (" +
         cublasGetStatusString(st) + ")";
}

}  // namespace tandem::backend::cuda

// Startup: throw tandem::Error naming the call and the device.
#define TANDEM_CUDA_THROW(call, device)                                                                   \
  do {                                                                                                    \
    cudaError_t tandem_err_ = (call);                                                                     \
    if (tandem_err_ != cudaSuccess) throw ::tandem::Error(::tandem::backend::cuda::cuda_failure(#call, (device), tandem_err_)); \
  } while (0)

// During a step: return Status::Internal naming the call and the device.
#define TANDEM_CUDA_RETURN(call, device)                                                                  \
  do {                                                                                                    \
    cudaError_t tandem_err_ = (call);                                                                     \
    if (tandem_err_ != cudaSuccess) return ::tandem::Status::Internal(::tandem::backend::cuda::cuda_failure(#call, (device), tandem_err_)); \
  } while (0)

#define TANDEM_CUBLAS_RETURN(call, device)                                                                \
  do {                                                                                                    \
    cublasStatus_t tandem_st_ = (call);                                                                   \
    if (tandem_st_ != CUBLAS_STATUS_SUCCESS) return ::tandem::Status::Internal(::tandem::backend::cuda::cublas_failure(#call, (device), tandem_st_)); \
  } while (0)

#define TANDEM_CUBLAS_THROW(call, device)                                                                 \
  do {                                                                                                    \
    cublasStatus_t tandem_st_ = (call);                                                                   \
    if (tandem_st_ != CUBLAS_STATUS_SUCCESS) throw ::tandem::Error(::tandem::backend::cuda::cublas_failure(#call, (device), tandem_st_)); \
  } while (0)

// After a kernel launch: a bad configuration shows up in cudaGetLastError at once.
// Launchers in this folder return cudaGetLastError() after their launch, so
//   TANDEM_CUDA_RETURN(launch_rms_norm(...), device_)
// names the launcher (and so the kernel) when a launch fails.
