// SimulatedAttack: makes this daemon a misbehaving device, for experiments
// with robust aggregation (bench/federated_quality.sh). A SIMULATION AID:
// with the default "none" nothing changes; a daemon started with another
// value logs "SIMULATED ATTACKER" at start.
//
//   none           honest
//   sign-flip      sends -delta instead of delta
//   scale:K        sends K x delta (K finite, |K| <= 1e6)
//   gaussian:S     sends noise N(0, S^2) of the update's size instead of it
//   label-flip     trains on labels C-1-y (C = the model's classes)
//
// Parse and the transforms are pure functions of their arguments (the
// Gaussian draws from the generator passed in); used by the daemon's
// network thread only. Apply works in place; FlipLabels too.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/dataset.h"

namespace fedsgd {

struct SimulatedAttack {
  enum class Kind { kNone, kSignFlip, kScale, kGaussian, kLabelFlip };
  Kind kind = Kind::kNone;
  double value = 0;  // K for scale, sigma for gaussian

  // Throws fedsgd::Error naming --simulate-attack and the text.
  static SimulatedAttack Parse(std::string_view text);
  std::string ToString() const;
  bool active() const { return kind != Kind::kNone; }
  // Changes a trained update (delta or gradient) as the attack sends it;
  // none and label-flip leave it unchanged.
  void Apply(std::vector<float>& update, std::mt19937_64& rng) const;
  // label-flip: y -> classes-1-y for every sample of a classification set;
  // the other kinds leave data unchanged. Throws fedsgd::Error for
  // regression data or classes < 2.
  void FlipLabels(Dataset& data, int classes) const;
};

}  // namespace fedsgd
