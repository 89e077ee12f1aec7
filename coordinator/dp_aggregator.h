// DpAggregator: DP-FedAvg, differential privacy at the level of devices,
// as a decorator around an inner Aggregator (the mean).
//
// McMahan, Ramage, Talwar and Zhang 2018, "Learning Differentially Private
// Recurrent Language Models" (DP-FedAvg): every update is clipped to L2 norm
// C; the clipped updates are summed with EQUAL weights (the uniform weighting
// of the paper; a device's declared sample count is unverified and would
// change the sensitivity); Gaussian noise N(0, (z_update x C)^2) is added to
// every coordinate of the SUM; the noisy sum is divided by a FIXED
// denominator, the number of devices the round was opened for
// (SetDenominator), never by the number that answered, so that neither the
// denominator nor the result's scale depends on who sent what. One device
// then changes the released sum by at most C, whatever it sends.
//
// Adaptive clipping (Andrew, Thakkar, McMahan and Ramaswamy 2021,
// "Differentially Private Learning with Adaptive Clipping"): C follows the
// target quantile Q of the update norms: with b the noisy fraction of
// updates of norm <= C, C <- C x exp(-eta (b - Q)) after each round. b is
// released with its own Gaussian noise (sigma_b on the sum of b_i - 1/2,
// sensitivity 1/2), so the noise multiplier z of the plan is split as the
// paper does: z_update = (z^-2 - (2 sigma_b)^-2)^(-1/2), and the accountant
// charges z. sigma_b = max(m / 20, z / (2 sqrt(0.1))) for m devices: the
// paper's m / 20, but never more than 10% of the privacy budget (in units
// of 1/z^2) for the quantile, which m / 20 would exceed below ~60 devices.
// With a fixed clip z_update = z.
//
// The noise comes from SecureGaussian (OpenSSL's CSPRNG), not the training
// RNG. Only noisy values leave this class: the released aggregate and the
// noisy fraction b; never a device's norm or the raw count of clipped
// updates.
//
// Not thread-safe: the round thread uses it. Memory: one model-sized float
// buffer besides the inner aggregator's. Fails like its inner aggregator;
// SecureGaussian throws fedsgd::Error when the system has no randomness.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aggregator.h"
#include "fedsgd/plan.h"
#include "secure_gaussian.h"

namespace fedsgd {

struct DpSettings {
  double noise_multiplier = 1.0;  // z, > 0
  double clip = 1.0;              // C, or the initial C when adaptive
  bool adaptive_clip = false;
  double target_quantile = 0.5;  // Q
  double clip_lr = 0.2;          // eta

  static DpSettings FromPlan(const Plan& plan);
};

class DpAggregator : public Aggregator {
 public:
  // inner must combine equally weighted updates into their mean.
  DpAggregator(std::unique_ptr<Aggregator> inner, DpSettings settings);

  std::string name() const override { return "dp(" + inner_->name() + ")"; }
  void Begin(std::size_t size) override;
  // The fixed denominator of this round (devices it was opened for); when
  // not set, or smaller than the updates received, the count is used.
  void SetDenominator(std::size_t devices) { denominator_ = devices; }
  // Clips the update to norm C and adds it with weight 1 (weight ignored).
  void Add(std::span<const float> update, double weight) override;
  std::size_t count() const override { return inner_->count(); }
  bool full() const override { return inner_->full(); }
  // The inner rule's figures, under this decorator's name.
  AggregationStats stats() const override {
    AggregationStats s = inner_->stats();
    s.rule = name();
    return s;
  }
  // The inner rule's state (e.g. the norm bound's history) passes through;
  // the clip of this decorator travels in the round's privacy record.
  void LoadState(const ServerState& state) override { inner_->LoadState(state); }
  void SaveState(ServerState& state) const override { inner_->SaveState(state); }
  // The noisy mean, then (adaptive) the next round's clip.
  void Finish(std::span<float> out) override;

  const DpSettings& settings() const { return settings_; }
  // The clip norm the next updates are clipped to.
  double clip() const { return clip_; }
  // The clip of the last finished round and its noisy fraction of unclipped
  // updates (adaptive clipping only; otherwise -1).
  double last_clip() const { return last_clip_; }
  double last_unclipped_fraction() const { return last_unclipped_fraction_; }
  // Standard deviations of the noise, per coordinate of the sum and on the
  // count of unclipped updates, for a round of `devices` devices.
  double UpdateNoiseMultiplier(std::size_t devices) const;
  double QuantileNoiseStddev(std::size_t devices) const;

  // State that must survive a restart: {C}. ImportState throws
  // fedsgd::Error for anything but one finite C > 0.
  std::vector<double> ExportState() const { return {clip_}; }
  void ImportState(std::span<const double> state);

 private:
  std::unique_ptr<Aggregator> inner_;
  DpSettings settings_;
  SecureGaussian noise_;
  std::vector<float> clipped_;  // the update being added, after clipping
  double clip_;
  double last_clip_;
  double last_unclipped_fraction_ = -1;
  std::size_t denominator_ = 0;
  std::size_t unclipped_ = 0;
};

}  // namespace fedsgd
