// LaunchOptions: how the CUDA backend's launchers launch their kernels (see launch.cuh). Plain C++, so
// that headers of launchers can name it without device code. A plain value: the backend chooses one when
// it starts (launch_options_for) and passes it to every launcher; tests build their own.
#pragma once

namespace tandem::backend::cuda {

struct LaunchOptions {
  // Programmatic dependent launch: each kernel may launch while the previous one drains (sm_90 and later;
  // H100, Qwen3-0.6B batch-1 decode 1.282 -> 1.183 ms a token, docs/performance.md).
  bool pdl = false;
};

// The options for a GPU of compute capability `major`.x: PDL from sm_90 on.
inline LaunchOptions launch_options_for(int major) { return LaunchOptions{.pdl = major >= 9}; }

}  // namespace tandem::backend::cuda
