// Aggregation rules (see aggregator.h).
#include "aggregator.h"

#include <cassert>
#include <limits>

#include "fedsgd/error.h"

namespace fedsgd {

void WeightedMeanAggregator::Begin(std::size_t size) {
  sum_.assign(size, 0.0);
  total_weight_ = 0;
  count_ = 0;
}

void WeightedMeanAggregator::Add(std::span<const float> update, double weight) {
  assert(update.size() == sum_.size() && weight > 0);
  double* s = sum_.data();
  const float* u = update.data();
  const std::size_t n = sum_.size();
  for (std::size_t i = 0; i < n; ++i) s[i] += weight * u[i];  // vectorised: bandwidth-bound
  total_weight_ += weight;
  ++count_;
}

void WeightedMeanAggregator::Finish(std::span<float> out) {
  assert(count_ > 0 && out.size() == sum_.size());
  const double scale = 1.0 / total_weight_;
  constexpr double kMax = std::numeric_limits<float>::max();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < sum_.size(); ++i) {
    const double mean = sum_[i] * scale;
    // Converting a double beyond the float range is undefined: say Inf.
    out[i] = mean > kMax ? kInf : mean < -kMax ? -kInf : static_cast<float>(mean);
  }
}

std::unique_ptr<Aggregator> MakeAggregator(std::string_view name) {
  if (name == "mean") return std::make_unique<WeightedMeanAggregator>();
  throw Error("unknown aggregation rule '" + std::string(name) + "' (available: mean)");
}

}  // namespace fedsgd
