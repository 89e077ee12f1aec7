// Backoff (see backoff.h).
#include "fedsgd/backoff.h"

#include <algorithm>

namespace fedsgd {

Backoff::Backoff(double initial, double cap, double jitter, std::uint64_t seed)
    : initial_(initial), cap_(cap), jitter_(jitter), next_(initial), rng_(seed) {}

double Backoff::Next() {
  const double base = next_;
  next_ = std::min(cap_, next_ * 2);
  std::uniform_real_distribution<double> spread(1.0 - jitter_, 1.0 + jitter_);
  return base * spread(rng_);
}

}  // namespace fedsgd
