// See cuda_log.h.
#include "backend/cuda/cuda_log.h"

#include <spdlog/spdlog.h>

namespace tandem::backend::cuda {

void log_info(const std::string& line) { spdlog::info("{}", line); }
void log_error(const std::string& line) { spdlog::error("{}", line); }

}  // namespace tandem::backend::cuda
