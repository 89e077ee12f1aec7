// Norm bounding and weight capping (see norm_bounding_aggregator.h).
#include "norm_bounding_aggregator.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

double Median(std::vector<double> v) {
  assert(!v.empty());
  const auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  if (v.size() % 2 == 1) return *mid;
  return (*std::max_element(v.begin(), mid) + *mid) / 2;
}

}  // namespace

double L2Norm(std::span<const float> v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * static_cast<double>(x);
  return std::sqrt(sum);
}

NormBoundingAggregator::NormBoundingAggregator(std::unique_ptr<Aggregator> inner, NormBound bound,
                                               double max_weight, double budget_bytes)
    : inner_(std::move(inner)),
      mode_(bound),
      max_weight_(max_weight),
      budget_bytes_(budget_bytes) {}

void NormBoundingAggregator::LoadState(const ServerState& state) {
  previous_median_ = 0;
  if (const auto it = state.find(kStateName); it != state.end()) {
    if (it->second.size() != 1 || !std::isfinite(it->second[0]) || it->second[0] < 0)
      throw Error("the stored norm-bound state is not one finite norm: the database is damaged");
    previous_median_ = it->second[0];
  }
  inner_->LoadState(state);
}

void NormBoundingAggregator::SaveState(ServerState& state) const {
  inner_->SaveState(state);
  if (stats_.median_norm) state[kStateName] = {*stats_.median_norm};
}

void NormBoundingAggregator::Begin(std::size_t size) {
  inner_->Begin(size);
  norms_.clear();
  count_ = 0;
  clipped_ = 0;
  weight_capped_ = 0;
  stats_ = AggregationStats{};
  buffering_ = false;
  switch (mode_.kind) {
    case NormBound::Kind::kOff:
      bound_ = 0;
      break;
    case NormBound::Kind::kFixed:
      bound_ = mode_.value;
      break;
    case NormBound::Kind::kAdaptive:
      bound_ = mode_.value * previous_median_;
      buffering_ = !(bound_ > 0);  // no usable history: clip against this round's own median
      break;
  }
  if (buffering_) buffer_.Reset(size, budget_bytes_);
}

void NormBoundingAggregator::Forward(std::span<const float> update, double norm, double weight) {
  if (mode_.kind == NormBound::Kind::kOff || norm <= bound_) {
    inner_->Add(update, weight);
    return;
  }
  ++clipped_;
  const auto scale = static_cast<float>(bound_ / norm);
  scratch_.resize(update.size());
  for (std::size_t i = 0; i < update.size(); ++i) scratch_[i] = update[i] * scale;
  inner_->Add(scratch_, weight);
}

void NormBoundingAggregator::Add(std::span<const float> update, double weight) {
  if (max_weight_ > 0 && weight > max_weight_) {
    weight = max_weight_;
    ++weight_capped_;
  }
  const double norm = L2Norm(update);
  norms_.push_back(norm);
  ++count_;
  if (buffering_) {
    buffer_.Add(update, weight);
  } else {
    Forward(update, norm, weight);
  }
}

void NormBoundingAggregator::Finish(std::span<float> out) {
  assert(count_ > 0);
  const double median = Median(norms_);
  if (buffering_) {
    bound_ = mode_.value * median;
    for (std::size_t i = 0; i < buffer_.count(); ++i)
      Forward(buffer_.row(i), norms_[i], buffer_.weight(i));
    buffer_.Reset(0, 0);  // the rows are not needed any more
  }
  inner_->Finish(out);
  stats_ = inner_->stats();
  stats_.updates = count_;
  stats_.median_norm = median;
  if (mode_.kind != NormBound::Kind::kOff) stats_.norm_bound = bound_;
  stats_.clipped = clipped_;
  stats_.weight_capped = weight_capped_;
}

}  // namespace fedsgd
