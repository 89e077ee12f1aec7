// Backoff: capped exponential delays with jitter, for reconnecting to a
// coordinator that went away. Starts at `initial` seconds, doubles up to
// `cap`, and spreads each delay by +/- `jitter` (a fraction) so a fleet that
// lost the same coordinator does not come back in lockstep. Reset() after a
// success starts again from `initial`.
//
// Not thread-safe: one owner (a daemon's network thread, a gateway's loop).
#pragma once

#include <cstdint>
#include <random>

namespace fedsgd {

class Backoff {
 public:
  // Requires 0 < initial <= cap and 0 <= jitter < 1.
  Backoff(double initial, double cap, double jitter, std::uint64_t seed);

  // Seconds to wait now, in [base * (1 - jitter), base * (1 + jitter)] where
  // base is initial * 2^k capped at cap; the next base is twice this one's.
  double Next();
  void Reset() { next_ = initial_; }

 private:
  double initial_, cap_, jitter_, next_;
  std::mt19937_64 rng_;
};

}  // namespace fedsgd
