// TrimmedMeanAggregator: per coordinate, drops the floor(beta x n) largest
// and smallest values and averages the rest (Yin et al. 2018).
//
// Robust while fewer than beta x n updates are hostile; unweighted. When
// 2 floor(beta x n) >= n (too few updates for beta) it keeps the middle one
// (or two) values, i.e. the median, and says so in its stats. Cost: buffers
// n x P floats; Finish is O(n x P) (two nth_element per coordinate over
// blocks of transposed columns). Not thread-safe.
#pragma once

#include "buffered_rule.h"

namespace fedsgd {

class TrimmedMeanAggregator : public BufferedRule {
 public:
  TrimmedMeanAggregator(double beta, double budget_bytes)
      : BufferedRule(budget_bytes), beta_(beta) {}
  std::string name() const override { return "trimmed_mean"; }
  void Finish(std::span<float> out) override;

 private:
  double beta_;
};

}  // namespace fedsgd
