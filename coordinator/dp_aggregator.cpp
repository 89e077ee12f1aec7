// DpAggregator (see dp_aggregator.h).
#include "dp_aggregator.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// The largest share of the privacy budget (in units of 1/z^2) adaptive
// clipping may spend on the noisy quantile.
constexpr double kQuantileBudgetShare = 0.1;

}  // namespace

DpSettings DpSettings::FromPlan(const Plan& plan) {
  DpSettings s;
  s.noise_multiplier = plan.dp_noise_multiplier;
  s.clip = plan.dp_clip;
  s.adaptive_clip = plan.dp_adaptive_clip;
  s.target_quantile = plan.dp_target_quantile;
  s.clip_lr = plan.dp_clip_lr;
  return s;
}

DpAggregator::DpAggregator(std::unique_ptr<Aggregator> inner, DpSettings settings)
    : inner_(std::move(inner)), settings_(settings), clip_(settings.clip), last_clip_(clip_) {
  assert(settings_.noise_multiplier > 0 && settings_.clip > 0);
}

void DpAggregator::Begin(std::size_t size) {
  inner_->Begin(size);
  clipped_.assign(size, 0.0f);
  denominator_ = 0;
  unclipped_ = 0;
}

void DpAggregator::Add(std::span<const float> update, double /*weight: uniform*/) {
  assert(update.size() == clipped_.size());
  double squares = 0;
  for (float v : update) squares += static_cast<double>(v) * static_cast<double>(v);
  const double norm = std::sqrt(squares);
  const double scale = norm > clip_ ? clip_ / norm : 1.0;
  if (norm <= clip_) ++unclipped_;
  const auto s = static_cast<float>(scale);
  for (std::size_t i = 0; i < update.size(); ++i) clipped_[i] = s * update[i];
  inner_->Add(clipped_, 1.0);
}

double DpAggregator::QuantileNoiseStddev(std::size_t devices) const {
  const double z = settings_.noise_multiplier;
  return std::max(static_cast<double>(devices) / 20.0, z / (2 * std::sqrt(kQuantileBudgetShare)));
}

double DpAggregator::UpdateNoiseMultiplier(std::size_t devices) const {
  const double z = settings_.noise_multiplier;
  if (!settings_.adaptive_clip) return z;
  const double two_sigma_b = 2 * QuantileNoiseStddev(devices);
  return 1 / std::sqrt(1 / (z * z) - 1 / (two_sigma_b * two_sigma_b));
}

void DpAggregator::Finish(std::span<float> out) {
  const std::size_t n = inner_->count();
  assert(n > 0 && out.size() == clipped_.size());
  const std::size_t m = std::max(denominator_, n);
  inner_->Finish(out);  // the mean of n equally weighted clipped updates
  // (sum + N(0, (z C)^2)) / m, computed as mean x n / m + noise / m.
  const double to_fixed = static_cast<double>(n) / static_cast<double>(m);
  const double noise_stddev = UpdateNoiseMultiplier(m) * clip_ / static_cast<double>(m);
  for (float& v : out) v = static_cast<float>(static_cast<double>(v) * to_fixed);
  noise_.AddNoise(out, noise_stddev);

  last_clip_ = clip_;
  if (!settings_.adaptive_clip) return;
  // Andrew et al. 2021, Algorithm 1: b_i - 1/2 summed (sensitivity 1/2),
  // noised, over the same fixed denominator.
  const double centred = static_cast<double>(unclipped_) - 0.5 * static_cast<double>(n);
  const double noisy =
      (centred + QuantileNoiseStddev(m) * noise_.Next()) / static_cast<double>(m) + 0.5;
  last_unclipped_fraction_ = noisy;
  clip_ *= std::exp(-settings_.clip_lr * (noisy - settings_.target_quantile));
}

void DpAggregator::ImportState(std::span<const double> state) {
  if (state.size() != 1 || !std::isfinite(state[0]) || state[0] <= 0) {
    throw Error("differential privacy: a saved clip state must be one number > 0 (" +
                std::to_string(state.size()) + " values given)");
  }
  clip_ = state[0];
  last_clip_ = clip_;
}

}  // namespace fedsgd
