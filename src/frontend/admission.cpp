// Admission control at the frontend (see admission.h).
#include "frontend/admission.h"

#include <string>

namespace tandem::frontend {

Admission::Admission(AdmissionOptions options, Metrics& metrics)
    : options_(options), metrics_(metrics), rejection_headers_{{"Retry-After", std::to_string(options.retry_after_s)}} {}

std::optional<ApiError> Admission::admit(size_t in_flight) {
  if (options_.max_pending_requests <= 0 || in_flight < static_cast<size_t>(options_.max_pending_requests)) {
    return std::nullopt;
  }
  metrics_.add("tandem_requests_rejected_total", labels({{"reason", "max_pending"}}));
  return ApiError::too_many_requests("the server has " + std::to_string(in_flight) +
                                     " requests in flight, its limit (--max-pending-requests); retry after " +
                                     std::to_string(options_.retry_after_s) + " s");
}

}  // namespace tandem::frontend
