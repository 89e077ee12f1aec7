// Coordinate-wise trimmed mean (see trimmed_mean_aggregator.h).
#include "trimmed_mean_aggregator.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "column_blocks.h"

namespace fedsgd {

void TrimmedMeanAggregator::Finish(std::span<float> out) {
  const std::size_t n = buffer_.count();
  assert(n > 0 && out.size() == buffer_.size());
  stats_ = AggregationStats{};
  stats_.rule = name();
  stats_.updates = n;
  auto cut = static_cast<std::size_t>(std::floor(beta_ * static_cast<double>(n)));
  if (2 * cut >= n) {
    cut = (n - 1) / 2;
    stats_.note = "too few updates to trim " + std::to_string(beta_) +
                  " at each end: kept the middle value(s)";
  }
  stats_.excluded = 2 * cut;
  const std::size_t kept = n - 2 * cut;
  ForEachColumn(buffer_, [&](std::size_t j, float* column) {
    // After the two partitions [cut, n - cut) holds the kept values.
    std::nth_element(column, column + cut, column + n);
    std::nth_element(column + cut, column + (n - cut), column + n);
    double sum = 0;
    for (std::size_t k = cut; k < n - cut; ++k) sum += column[k];
    out[j] = static_cast<float>(sum / static_cast<double>(kept));
  });
}

}  // namespace fedsgd
