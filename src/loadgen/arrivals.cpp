// Gamma-distributed inter-arrival gaps (Poisson when the shape is 1).
#include "loadgen/arrivals.h"

#include <cmath>
#include <random>

namespace tandem::loadgen {

std::vector<double> make_arrival_offsets(int32_t num_requests, double request_rate, double burstiness, uint64_t seed) {
  std::vector<double> offsets(static_cast<size_t>(std::max(num_requests, 0)), 0.0);
  if (std::isinf(request_rate)) return offsets;
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (request_rate * burstiness));
  double t = 0.0;
  for (size_t i = 1; i < offsets.size(); ++i) {
    t += gap(rng);
    offsets[i] = t;
  }
  return offsets;
}

}  // namespace tandem::loadgen
