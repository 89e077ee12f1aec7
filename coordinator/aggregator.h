// Aggregator: combines the updates of one round into one update.
//
// The round logic only calls LoadState / Begin / Add / Finish / SaveState,
// so each rule (the streaming weighted mean; median, trimmed mean and Krum,
// which buffer the round's updates) and each decorator (norm bounding,
// differential privacy) is an addition behind MakeAggregator, not a change
// to the rounds. Updates are flat float vectors of the model's size; the
// aggregator never needs the architecture.
//
// Life of a round, as RoundManager drives it:
//   LoadState(committed state)   state carried from the last committed round
//   Begin(P)                     forgets the previous round's updates
//   Add(update, weight) x n      while !full()
//   Finish(out)                  out = the aggregate; stats() describe it
//   SaveState(&new state)        written into the state committed with the
//                                round; a discarded round never saves, and
//                                the next LoadState restores the committed one
//
// Memory: the mean keeps one running sum (P floats); a buffering rule keeps
// n x P floats, never more than its budget (full() then says so and the
// round closes with what it has). Not thread-safe: one round thread uses an
// aggregator. Add with the wrong size is a programming error (asserted: the
// round logic checks sizes first).
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/plan.h"
#include "server_state.h"

namespace fedsgd {

// What a rule did in one round; stored with the round record ("aggregation").
struct AggregationStats {
  std::string rule;
  std::size_t updates = 0;            // updates the rule was given
  std::optional<double> norm_bound;   // L2 bound applied, none when off
  std::optional<double> median_norm;  // median L2 norm of the raw updates
  std::size_t clipped = 0;            // updates scaled down to the bound
  std::size_t weight_capped = 0;      // updates whose weight was capped
  std::size_t excluded = 0;           // Krum: updates not selected; trimmed mean: cut per end x 2
  std::string note;                   // e.g. a fallback, empty when none

  nlohmann::json ToJson() const;
};

class Aggregator {
 public:
  virtual ~Aggregator() = default;
  virtual std::string name() const = 0;
  // Starts a round of updates of `size` floats, forgetting the last one.
  virtual void Begin(std::size_t size) = 0;
  // Adds one device's update with its weight (its sample count, > 0).
  // update.size() must equal the size given to Begin, and !full().
  virtual void Add(std::span<const float> update, double weight) = 0;
  virtual std::size_t count() const = 0;
  // True when the buffer budget is used up: no further Add this round.
  virtual bool full() const { return false; }
  // Writes the combined update to out (size floats). Needs count() >= 1.
  virtual void Finish(std::span<float> out) = 0;
  // What the last Finish did.
  virtual AggregationStats stats() const = 0;
  // State carried between rounds (see above); rules without any ignore it.
  virtual void LoadState(const ServerState& /*state*/) {}
  virtual void SaveState(ServerState& /*state*/) const {}
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
  AggregationStats stats() const override;

 private:
  std::vector<double> sum_;
  double total_weight_ = 0;
  std::size_t count_ = 0;
};

// The rule the plan names (plan.aggregator with its parameters), wrapped in
// the plan's norm bound and weight cap (norm_bounding_aggregator.h). Throws
// fedsgd::Error for an invalid plan.
std::unique_ptr<Aggregator> MakeAggregator(const Plan& plan);
// The bare rule of that name with the plan defaults' parameters and no norm
// bound ("mean", "median", ...); throws fedsgd::Error for an unknown name.
std::unique_ptr<Aggregator> MakeAggregator(std::string_view name);
// The bare rule of plan.aggregator, without norm bound or weight cap.
std::unique_ptr<Aggregator> MakeRule(const Plan& plan);

// Bytes the plan's aggregation buffers take for `updates` updates of
// `parameters` floats (0 for a streaming configuration).
double AggregationBufferBytes(const Plan& plan, std::size_t updates, std::size_t parameters);

}  // namespace fedsgd
