// NormBoundingAggregator: a decorator that bounds each update's influence
// before the wrapped rule sees it: its weight is capped at max_weight (when
// > 0), and its L2 norm is clipped to a bound (scaled down to it, direction
// kept). With the mean inside, the aggregate is a convex combination of
// vectors of norm <= bound, so its norm is <= bound whatever one device
// claims: one hostile update (finite, 1e30 per weight, a huge sample count)
// moves the model by at most the bound x the server step, as an honest
// update of that norm would.
//
// The bound (--norm-bound):
//   fixed:B      B.
//   adaptive:K   K x the median L2 norm of the updates of the previous
//                committed round (the "norm_bound" entry of ServerState,
//                checkpointed with the weights, so a resume keeps it). The
//                weighted mean streams and cannot clip retroactively, so the
//                bound must be known when an update arrives; the previous
//                round's median is, and more than half of the devices would
//                have to lie to inflate it. The first round of a run has no
//                history: its updates are buffered (n x P floats) and
//                clipped at Finish against K x their own median.
//
// Memory: none beyond the wrapped rule, except that first round's buffer
// (budget_bytes at most: full() then closes the round). Not thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "aggregator.h"
#include "update_buffer.h"

namespace fedsgd {

class NormBoundingAggregator : public Aggregator {
 public:
  NormBoundingAggregator(std::unique_ptr<Aggregator> inner, NormBound bound, double max_weight,
                         double budget_bytes);
  std::string name() const override { return inner_->name(); }
  void Begin(std::size_t size) override;
  void Add(std::span<const float> update, double weight) override;
  std::size_t count() const override { return count_; }
  bool full() const override { return buffering_ ? buffer_.full() : inner_->full(); }
  void Finish(std::span<float> out) override;
  AggregationStats stats() const override { return stats_; }
  void LoadState(const ServerState& state) override;
  void SaveState(ServerState& state) const override;

  static constexpr const char* kStateName = "norm_bound";

 private:
  // Passes the update to the inner rule, clipped to bound_ when over it.
  void Forward(std::span<const float> update, double norm, double weight);

  std::unique_ptr<Aggregator> inner_;
  NormBound mode_;
  double max_weight_;
  double budget_bytes_;
  double previous_median_ = 0;  // 0: no history
  double bound_ = 0;            // this round's bound, when known
  bool buffering_ = false;
  UpdateBuffer buffer_;
  std::vector<double> norms_;   // this round's raw norms
  std::vector<float> scratch_;  // one clipped update
  std::size_t count_ = 0;
  AggregationStats stats_;
  std::size_t clipped_ = 0;
  std::size_t weight_capped_ = 0;
};

// The L2 norm of v, accumulated in double (1e30-sized floats do not overflow).
double L2Norm(std::span<const float> v);

}  // namespace fedsgd
