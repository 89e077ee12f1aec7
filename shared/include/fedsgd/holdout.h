// HoldOut: splits a device's shard into the part it trains on and the part
// it keeps for federated evaluation (Plan::eval_fraction).
//
// For classification data the split is stratified: each class present gives
// round(fraction x its count) samples to the held-out part (so a device with
// two classes evaluates on both), chosen by a seeded shuffle; the same data,
// fraction and seed always give the same split. A class with a single sample
// stays in training. Regression data is split without strata.
//
// Pure function, reentrant. Memory: the two index vectors (one size_t per
// sample); the caller's Subset() calls copy the samples.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "fedsgd/dataset.h"

namespace fedsgd {

struct HoldOutSplit {
  std::vector<std::size_t> train;  // ascending
  std::vector<std::size_t> eval;   // ascending
};

// fraction in [0, 1); throws fedsgd::Error otherwise. fraction 0 holds out
// nothing. The training part is never left empty when data is not.
HoldOutSplit HoldOut(const Dataset& data, double fraction, std::uint64_t seed);

}  // namespace fedsgd
