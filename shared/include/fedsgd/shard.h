// Shards: how one data set is split among the simulated devices of a fleet.
//
//   iid            shuffle, then n equal parts
//   labels:K       each shard holds samples of only K classes (McMahan et al.
//                  2017: sort by label, cut into n*K pieces, K per shard)
//   dirichlet:A    per-class proportions drawn from Dirichlet(A): small A
//                  gives strong label skew, large A approaches iid
//
// Shards are disjoint, together cover the data set (up to rounding), and
// depend only on (data, n, spec, seed): every device computes its own
// shard without talking to the others.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/dataset.h"

namespace fedsgd {

struct ShardSpec {
  enum class Kind { kIid, kLabels, kDirichlet };
  Kind kind = Kind::kIid;
  int labels_per_shard = 2;  // labels:K
  double alpha = 0.5;        // dirichlet:A

  // Parses "iid", "labels:K" (K >= 1), "dirichlet:A" (A > 0); throws
  // fedsgd::Error otherwise.
  static ShardSpec Parse(std::string_view text);
  std::string ToString() const;
};

// "i/n" with 0 <= i < n; throws fedsgd::Error otherwise.
struct ShardIndex {
  int index = 0;
  int count = 1;
  static ShardIndex Parse(std::string_view text);
};

// Sample indices of shard `shard.index` of `shard.count`. Throws
// fedsgd::Error when the spec cannot be met (e.g. labels:K on regression
// data, or more pieces than samples).
std::vector<std::size_t> MakeShard(const Dataset& data, ShardIndex shard, const ShardSpec& spec,
                                   std::uint64_t seed);

// The shard as a loader's RowPicker (dataset.h), so a device loads only its
// own samples: MakeShard needs the targets alone. Empty (load everything)
// when shard.count is 1.
RowPicker ShardPicker(ShardIndex shard, const ShardSpec& spec, std::uint64_t seed);

}  // namespace fedsgd
