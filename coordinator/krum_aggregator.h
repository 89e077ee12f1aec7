// KrumAggregator: Krum and multi-Krum (Blanchard et al. 2017, "Machine
// Learning with Adversaries: Byzantine Tolerant Gradient Descent").
//
// Each update i is scored by the sum of its squared L2 distances to its
// n - f - 2 nearest other updates; Krum returns the best-scored update,
// multi-Krum the unweighted mean of the m best (m = krum_select, 0 = n - f).
// Needs n > 2f + 2: with fewer updates at Finish it does not guess a smaller
// f, it falls back to the coordinate-wise median (robust for any n), logs
// that in stats().note, and the round is applied.
//
// Cost: buffers n x P floats; Finish computes the n(n-1)/2 pairwise
// distances, O(n^2 x P), in double (Eigen), so 1e30-sized updates do not
// overflow. Not thread-safe.
#pragma once

#include "buffered_rule.h"

namespace fedsgd {

class KrumAggregator : public BufferedRule {
 public:
  // multi = false: Krum (select ignored); true: multi-Krum averaging
  // `select` updates, 0 = n - f.
  KrumAggregator(bool multi, int byzantine, int select, double budget_bytes)
      : BufferedRule(budget_bytes),
        multi_(multi),
        byzantine_(byzantine),
        select_(multi ? select : 1) {}
  std::string name() const override { return multi_ ? "multi_krum" : "krum"; }
  void Finish(std::span<float> out) override;
  // The indices of the updates chosen by the last Finish, ascending (empty
  // after a fallback).
  const std::vector<std::size_t>& selected() const { return selected_; }

 private:
  bool multi_;
  int byzantine_;
  int select_;
  std::vector<std::size_t> selected_;
};

}  // namespace fedsgd
