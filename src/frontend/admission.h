// Admission control at the frontend (issue 20): beyond --max-pending-requests generation requests in
// flight, a new one is refused at once with 429 and a Retry-After header, rather than queued where its
// client cannot see it wait. The limit counts the requests the frontend holds (tokenized, sent to a
// worker, streaming), whatever their worker; 0 means no limit.
//
// Ownership: borrows the metrics, which must outlive it.
// Thread-safety: none; the frontend's I/O thread only.
#pragma once

#include <cstddef>
#include <optional>

#include "frontend/http.h"
#include "frontend/metrics.h"
#include "frontend/openai.h"

namespace tandem::frontend {

struct AdmissionOptions {
  int max_pending_requests = 0;  // 0 = no limit
  int retry_after_s = 1;         // the Retry-After a 429 carries
};

class Admission {
 public:
  Admission(AdmissionOptions options, Metrics& metrics);
  // Whether one more request may start while `in_flight` are held. Else the 429 to answer (with
  // rejection_headers()), counted in tandem_requests_rejected_total{reason="max_pending"}.
  std::optional<ApiError> admit(size_t in_flight);
  const HttpHeaders& rejection_headers() const { return rejection_headers_; }

 private:
  AdmissionOptions options_;
  Metrics& metrics_;
  HttpHeaders rejection_headers_;
};

}  // namespace tandem::frontend
