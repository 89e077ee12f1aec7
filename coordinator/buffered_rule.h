// BufferedRule: the common part of the rules that need the whole round at
// once (median_aggregator.h, trimmed_mean_aggregator.h, krum_aggregator.h):
// they keep the round's updates in an UpdateBuffer of at most budget_bytes
// (n x P x 4 bytes) and combine them at Finish. Unweighted by design: a
// robust rule must not let a claimed sample count buy influence.
//
// Not thread-safe: one round thread uses it.
#pragma once

#include "aggregator.h"
#include "update_buffer.h"

namespace fedsgd {

class BufferedRule : public Aggregator {
 public:
  explicit BufferedRule(double budget_bytes) : budget_bytes_(budget_bytes) {}
  void Begin(std::size_t size) override { buffer_.Reset(size, budget_bytes_); }
  void Add(std::span<const float> update, double weight) override { buffer_.Add(update, weight); }
  std::size_t count() const override { return buffer_.count(); }
  bool full() const override { return buffer_.full(); }
  AggregationStats stats() const override { return stats_; }

 protected:
  UpdateBuffer buffer_;
  AggregationStats stats_;

 private:
  double budget_bytes_;
};

}  // namespace fedsgd
