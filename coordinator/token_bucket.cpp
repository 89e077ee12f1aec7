// TokenBucket (see token_bucket.h).
#include "token_bucket.h"

#include <algorithm>

namespace fedsgd {

TokenBucket::TokenBucket(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}

bool TokenBucket::Take(double now) {
  if (started_ && now > last_) tokens_ = std::min(burst_, tokens_ + (now - last_) * rate_);
  if (!started_ || now > last_) last_ = now;
  started_ = true;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

}  // namespace fedsgd
