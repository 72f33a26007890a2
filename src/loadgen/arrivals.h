// Arrival times of benchmark requests: a Poisson process (burstiness 1) or, as in vLLM's benchmark, a
// gamma process whose mean rate is request_rate and whose shape is burstiness (<1 burstier, >1 smoother).
// Thread-safety: plain functions.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace tandem::loadgen {

inline constexpr double kInfiniteRate = std::numeric_limits<double>::infinity();

// Seconds from the start of the run at which each of num_requests requests is sent: the first at 0, then
// gaps drawn from Gamma(shape=burstiness, scale=1/(rate*burstiness)). An infinite rate sends all at 0.
// REQUIRES: request_rate > 0, burstiness > 0.
std::vector<double> make_arrival_offsets(int32_t num_requests, double request_rate, double burstiness, uint64_t seed);

}  // namespace tandem::loadgen
