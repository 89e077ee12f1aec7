// Coordinate-wise median (see median_aggregator.h).
#include "median_aggregator.h"

#include <algorithm>
#include <cassert>

#include "column_blocks.h"

namespace fedsgd {

void CoordinateMedian(const UpdateBuffer& buffer, std::span<float> out) {
  const std::size_t n = buffer.count();
  assert(n > 0 && out.size() == buffer.size());
  ForEachColumn(buffer, [&](std::size_t j, float* column) {
    float* mid = column + n / 2;
    std::nth_element(column, mid, column + n);
    if (n % 2 == 1) {
      out[j] = *mid;
    } else {
      // The lower middle is the largest of the lower half.
      const float lower = *std::max_element(column, mid);
      out[j] = static_cast<float>((static_cast<double>(lower) + *mid) / 2);
    }
  });
}

void MedianAggregator::Finish(std::span<float> out) {
  CoordinateMedian(buffer_, out);
  stats_ = AggregationStats{};
  stats_.rule = name();
  stats_.updates = buffer_.count();
}

}  // namespace fedsgd
