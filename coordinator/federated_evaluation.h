// FederatedEvaluation: one round's view of how the global model does on the
// devices' own held-out data (Plan::eval_fraction; the devices measure it
// before training, so it describes the model version the round started
// from, i.e. round - 1).
//
// From the evaluations the round's updates carried it derives the
// sample-weighted accuracy and loss (what the model scores over all
// held-out samples) and the min / median / max accuracy over devices (the
// fairness view: a model can be good on average and poor for some devices,
// e.g. under label skew). Derived on demand from the round's
// DeviceContributions, never stored, so old rounds read back the same.
//
// A pure function of its input; reentrant. Memory: a copy of the accuracies
// for the median.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "fedsgd/wire.h"

namespace fedsgd {

struct FederatedEvaluation {
  double accuracy = 0;  // sample-weighted over devices
  double loss = 0;      // sample-weighted over devices
  double min_accuracy = 0;
  double median_accuracy = 0;  // the mean of the middle two for an even count
  double max_accuracy = 0;
  std::size_t devices = 0;    // devices that reported an evaluation
  std::uint64_t samples = 0;  // held-out samples over those devices
};

// nullopt when no device reported one (federated evaluation off, or only
// older daemons).
std::optional<FederatedEvaluation> SummariseFederatedEvaluation(
    const std::vector<wire::HeldOutEvaluation>& evaluations);

}  // namespace fedsgd
