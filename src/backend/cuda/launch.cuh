// Kernel launches with programmatic dependent launch (PDL, sm_90+): a kernel launched through
// launch_kernel may start while the kernel before it in the stream is still finishing, so its launch
// latency and prologue (index math, loads of constant data such as weights) overlap the previous
// kernel's tail. Every kernel of this backend starts with pdl_trigger() (let the next kernel launch
// early) and calls pdl_wait() before it touches anything an earlier kernel wrote; pdl_wait() returns once
// the previous grid has completed and its memory is visible. Without PDL (LaunchOptions::pdl false: an
// older GPU, or a test's plain launch) both are no-ops and the launch is an ordinary one.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/launch_options.h"

namespace tandem::backend::cuda {

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

template <typename... KernelArgs, typename... Args>
cudaError_t launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                          const LaunchOptions& options, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = options.pdl ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace tandem::backend::cuda
