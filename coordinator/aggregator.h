// Aggregator: combines the updates of one round into one update.
//
// The round logic only calls Begin / Add / Finish, so other rules (median,
// trimmed mean, Krum need all updates at once and can buffer them; a
// streaming rule need not) are additions behind MakeAggregator, not changes
// to the rounds. Updates are flat float vectors of the model's size; the
// aggregator never needs the architecture.
//
// Not thread-safe: one round thread uses an aggregator.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedsgd {

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  virtual std::string name() const = 0;
  // Starts a round of updates of `size` floats, forgetting the last one.
  virtual void Begin(std::size_t size) = 0;
  // Adds one device's update with its weight (its sample count, > 0).
  // update.size() must equal the size given to Begin.
  virtual void Add(std::span<const float> update, double weight) = 0;
  virtual std::size_t count() const = 0;
  // Writes the combined update to out (size floats). Needs count() >= 1.
  virtual void Finish(std::span<float> out) = 0;
};

// The sample-weighted mean (FedAvg, McMahan et al. 2017). Streaming: keeps
// one running sum, so memory does not grow with the number of devices. The
// sum is in double: finite float updates times sample counts cannot
// overflow it; a mean beyond the float range comes out as +-Inf, which the
// coordinator's check before the commit refuses.
class WeightedMeanAggregator : public Aggregator {
 public:
  std::string name() const override { return "mean"; }
  void Begin(std::size_t size) override;
  void Add(std::span<const float> update, double weight) override;
  std::size_t count() const override { return count_; }
  void Finish(std::span<float> out) override;

 private:
  std::vector<double> sum_;
  double total_weight_ = 0;
  std::size_t count_ = 0;
};

// "mean" today. Throws fedsgd::Error for an unknown name.
std::unique_ptr<Aggregator> MakeAggregator(std::string_view name);

}  // namespace fedsgd
