// Backoff: capped exponential delays with jitter, for reconnecting to a
// coordinator that went away. Starts at `initial`, doubles up to `cap`, and
// each delay is spread by +/- jitter (a fraction) so a fleet that lost the
// same coordinator does not come back in lockstep. Reset() after success.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>

namespace fedsgd {

class Backoff {
 public:
  Backoff(double initial, double cap, double jitter, std::uint64_t seed)
      : initial_(initial), cap_(cap), jitter_(jitter), next_(initial), rng_(seed) {}

  // Seconds to wait now; the one after is twice as long (up to the cap).
  double Next() {
    const double base = next_;
    next_ = std::min(cap_, next_ * 2);
    std::uniform_real_distribution<double> spread(1.0 - jitter_, 1.0 + jitter_);
    return base * spread(rng_);
  }
  void Reset() { next_ = initial_; }

 private:
  double initial_, cap_, jitter_, next_;
  std::mt19937_64 rng_;
};

}  // namespace fedsgd
