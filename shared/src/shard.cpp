// Shards of a data set for simulated devices (see shard.h).
//
// Every device computes its own shard from (data, n, spec, seed) alone, so
// the random choices below must be the same on every device: they use
// std::mt19937_64, which is fully specified, and std distributions, which
// are implementation-defined: all devices of a fleet must use the same C++
// standard library (libstdc++ on Debian-based images).
#include "fedsgd/shard.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>
#include <random>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

[[noreturn]] void BadSpec(std::string_view text) {
  throw Error("invalid shard split '" + std::string(text) +
              "' (expected iid, labels:K with K >= 1, or dirichlet:ALPHA with ALPHA > 0)");
}

std::vector<std::size_t> Shuffled(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// Part i of n equal parts of v (the first n % size parts one longer).
std::vector<std::size_t> Part(const std::vector<std::size_t>& v, int i, int n) {
  const std::size_t begin = v.size() * i / n, end = v.size() * (i + 1) / n;
  return {v.begin() + static_cast<std::ptrdiff_t>(begin),
          v.begin() + static_cast<std::ptrdiff_t>(end)};
}

}  // namespace

ShardSpec ShardSpec::Parse(std::string_view text) {
  ShardSpec s;
  if (text == "iid") return s;
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) BadSpec(text);
  const std::string_view kind = text.substr(0, colon), value = text.substr(colon + 1);
  if (kind == "labels") {
    int k = 0;
    const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), k);
    if (ec != std::errc() || p != value.data() + value.size() || k < 1) BadSpec(text);
    s.kind = Kind::kLabels;
    s.labels_per_shard = k;
  } else if (kind == "dirichlet") {
    double a = 0;
    const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), a);
    if (ec != std::errc() || p != value.data() + value.size() || !(a > 0) || !std::isfinite(a)) {
      BadSpec(text);
    }
    s.kind = Kind::kDirichlet;
    s.alpha = a;
  } else {
    BadSpec(text);
  }
  return s;
}

std::string ShardSpec::ToString() const {
  switch (kind) {
    case Kind::kIid:
      return "iid";
    case Kind::kLabels:
      return "labels:" + std::to_string(labels_per_shard);
    case Kind::kDirichlet: {
      char buf[48];
      std::snprintf(buf, sizeof buf, "dirichlet:%g", alpha);
      return buf;
    }
  }
  return "iid";
}

ShardIndex ShardIndex::Parse(std::string_view text) {
  const std::size_t slash = text.find('/');
  ShardIndex s;
  bool ok = slash != std::string_view::npos;
  if (ok) {
    const std::string_view a = text.substr(0, slash), b = text.substr(slash + 1);
    const auto ra = std::from_chars(a.data(), a.data() + a.size(), s.index);
    const auto rb = std::from_chars(b.data(), b.data() + b.size(), s.count);
    ok = ra.ec == std::errc() && ra.ptr == a.data() + a.size() && rb.ec == std::errc() &&
         rb.ptr == b.data() + b.size() && s.count >= 1 && s.index >= 0 && s.index < s.count;
  }
  if (!ok) {
    throw Error("invalid shard '" + std::string(text) +
                "' (expected i/n with 0 <= i < n, e.g. 0/4)");
  }
  return s;
}

std::vector<std::size_t> MakeShard(const Dataset& data, ShardIndex shard, const ShardSpec& spec,
                                   std::uint64_t seed) {
  const int n = shard.count, i = shard.index;
  if (static_cast<std::size_t>(n) > data.size()) {
    throw Error("cannot cut " + std::to_string(data.size()) + " samples into " + std::to_string(n) +
                " shards");
  }
  std::mt19937_64 rng(seed);
  switch (spec.kind) {
    case ShardSpec::Kind::kIid:
      return Part(Shuffled(data.size(), rng), i, n);

    case ShardSpec::Kind::kLabels: {
      if (data.num_classes == 0)
        throw Error("labels:K shards need class labels, not regression data");
      // McMahan et al. 2017: sort by label, cut into n*K pieces, deal K
      // random pieces to each shard.
      std::vector<std::size_t> order = Shuffled(data.size(), rng);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return data.y[a] < data.y[b]; });
      const int pieces = n * spec.labels_per_shard;
      if (static_cast<std::size_t>(pieces) > data.size()) {
        throw Error("labels:" + std::to_string(spec.labels_per_shard) + " needs " +
                    std::to_string(pieces) + " pieces but there are only " +
                    std::to_string(data.size()) + " samples");
      }
      std::vector<std::size_t> piece_order = Shuffled(static_cast<std::size_t>(pieces), rng);
      std::vector<std::size_t> out;
      for (int k = 0; k < spec.labels_per_shard; ++k) {
        const int piece =
            static_cast<int>(piece_order[static_cast<std::size_t>(i * spec.labels_per_shard + k)]);
        const std::vector<std::size_t> part = Part(order, piece, pieces);
        out.insert(out.end(), part.begin(), part.end());
      }
      std::sort(out.begin(), out.end());
      return out;
    }

    case ShardSpec::Kind::kDirichlet: {
      if (data.num_classes == 0)
        throw Error("dirichlet shards need class labels, not regression data");
      std::vector<std::vector<std::size_t>> by_class(data.num_classes);
      for (std::size_t s : Shuffled(data.size(), rng)) {
        by_class[static_cast<std::size_t>(data.y[s])].push_back(s);
      }
      std::gamma_distribution<double> gamma(spec.alpha, 1.0);
      std::vector<std::size_t> out;
      for (const std::vector<std::size_t>& members : by_class) {
        // Proportions over the n shards ~ Dirichlet(alpha): normalised gammas.
        std::vector<double> p(n);
        double total = 0;
        for (double& x : p) total += (x = gamma(rng));
        if (!(total > 0)) {
          std::fill(p.begin(), p.end(), 1.0);
          total = n;
        }
        double before = 0;
        for (int k = 0; k < i; ++k) before += p[k];
        const std::size_t m = members.size();
        const auto begin =
            static_cast<std::size_t>(std::llround(before / total * static_cast<double>(m)));
        const auto end = static_cast<std::size_t>(
            std::llround((before + p[i]) / total * static_cast<double>(m)));
        out.insert(out.end(), members.begin() + static_cast<std::ptrdiff_t>(begin),
                   members.begin() + static_cast<std::ptrdiff_t>(std::min(end, m)));
      }
      std::sort(out.begin(), out.end());
      return out;
    }
  }
  return {};
}

}  // namespace fedsgd
