// Stratified, seeded hold-out split (see holdout.h).
#include "fedsgd/holdout.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>

#include "fedsgd/error.h"

namespace fedsgd {

HoldOutSplit HoldOut(const Dataset& data, double fraction, std::uint64_t seed) {
  if (!std::isfinite(fraction) || fraction < 0 || fraction >= 1) {
    throw Error("the held-out fraction must be in [0, 1), not " + std::to_string(fraction));
  }
  HoldOutSplit split;
  // Strata: samples per class (one stratum for regression).
  std::map<long, std::vector<std::size_t>> strata;
  for (std::size_t i = 0; i < data.size(); ++i) {
    strata[data.num_classes > 0 ? std::lround(data.y[i]) : 0].push_back(i);
  }
  std::mt19937_64 rng(seed ^ 0x486F6C644F7574ULL);  // "HoldOut": apart from the shard's seed
  for (auto& [label, members] : strata) {
    std::shuffle(members.begin(), members.end(), rng);
    auto held =
        static_cast<std::size_t>(std::lround(fraction * static_cast<double>(members.size())));
    held = std::min(held, members.size() - 1);  // every class keeps a training sample
    split.eval.insert(split.eval.end(), members.begin(), members.begin() + static_cast<long>(held));
    split.train.insert(split.train.end(), members.begin() + static_cast<long>(held), members.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.eval.begin(), split.eval.end());
  return split;
}

}  // namespace fedsgd
