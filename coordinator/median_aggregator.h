// MedianAggregator: the coordinate-wise median of the round's updates
// (Yin et al. 2018, "Byzantine-Robust Distributed Learning: Towards Optimal
// Statistical Rates"). With an even count, the mean of the two middle values.
//
// Robust to fewer than half of the updates being arbitrary, per coordinate;
// unweighted. Cost: buffers n x P floats (BufferedRule); Finish is O(n x P)
// (nth_element over each coordinate's n values, read in blocks of columns so
// the transposition stays in cache). Not thread-safe.
#pragma once

#include "buffered_rule.h"

namespace fedsgd {

class MedianAggregator : public BufferedRule {
 public:
  using BufferedRule::BufferedRule;
  std::string name() const override { return "median"; }
  void Finish(std::span<float> out) override;
};

// The coordinate-wise median of rows[0..n) of `buffer` into out; shared with
// Krum's fallback.
void CoordinateMedian(const UpdateBuffer& buffer, std::span<float> out);

}  // namespace fedsgd
