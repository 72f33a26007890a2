// Host entry of the CUDA toolchain probe (compiled only when TANDEM_CUDA is on).
#pragma once

#include <string>

namespace tandem::backend::cuda {

// Runs a one-thread kernel on device 0 and describes the devices; never throws.
std::string probe_cuda();

}  // namespace tandem::backend::cuda
