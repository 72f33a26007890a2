// Logging for the CUDA sources: nvcc cannot compile fmt's compile-time format checks (fmt 9 in C++20),
// so .cu files log preformatted lines through these, which are compiled by the host compiler.
#pragma once

#include <string>

namespace tandem::backend::cuda {

void log_info(const std::string& line);
void log_error(const std::string& line);

}  // namespace tandem::backend::cuda
