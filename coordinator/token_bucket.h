// TokenBucket: a rate limit of `rate` events per second with bursts of up to
// `burst` events (the classic token bucket: tokens refill continuously at
// `rate` up to `burst`; each allowed event takes one). The coordinator keeps
// one for joins and one per device for model fetches.
//
// Times are seconds on the caller's monotonic clock, passed in, so tests
// drive it with a fake one. A clock that goes backwards adds no tokens.
// Memory: three doubles. Not thread-safe: the coordinator's loop owns it.
#pragma once

namespace fedsgd {

class TokenBucket {
 public:
  // rate > 0 events per second, burst >= 1. Starts full.
  TokenBucket(double rate, double burst);

  // Takes a token and returns true, or returns false (and takes nothing)
  // when the bucket is empty: the event is over the limit.
  bool Take(double now);

 private:
  double rate_;
  double burst_;
  double tokens_;
  double last_ = 0;
  bool started_ = false;
};

}  // namespace fedsgd
