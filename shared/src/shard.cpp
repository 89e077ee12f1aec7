// Shards of a data set for simulated devices (see shard.h).
//
// Every device computes its own shard from (data, n, spec, seed) alone, so
// every random choice below must come out the same on every device. The
// engine, std::mt19937_64, is fully specified by the standard; std::shuffle
// and std::gamma_distribution are not (their algorithms are the library's
// choice), so all devices of a fleet must use the same C++ standard library.
// They do: every build is GCC with libstdc++ (Debian and its images).
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

template <typename T>
bool ParseWhole(std::string_view text, T& value) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

std::vector<std::size_t> Shuffled(std::size_t n, std::mt19937_64& rng) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// Part i of n nearly equal consecutive parts of v.
std::vector<std::size_t> Part(const std::vector<std::size_t>& v, std::size_t i, std::size_t n) {
  const std::size_t begin = v.size() * i / n, end = v.size() * (i + 1) / n;
  return {v.begin() + static_cast<std::ptrdiff_t>(begin),
          v.begin() + static_cast<std::ptrdiff_t>(end)};
}

// The label-skewed splits index arrays by class, so labels must be class
// indices; a regression target or a stray value would index out of bounds.
void CheckClassLabels(const Dataset& data, const ShardSpec& spec) {
  if (data.num_classes <= 0) {
    throw Error(spec.ToString() + " shards need class labels, not regression data");
  }
  for (const float label : data.y) {
    if (!(label >= 0) || label >= static_cast<float>(data.num_classes) ||
        label != std::floor(label)) {
      throw Error(spec.ToString() + " shards: label " + std::to_string(label) +
                  " is not a class index below " + std::to_string(data.num_classes));
    }
  }
}

// McMahan et al. 2017: sort by label (stably, after a shuffle, so each
// class's samples are in random order), cut into n*K equal pieces and deal K
// random pieces to each shard. A shard then sees at most K classes, unless a
// piece straddles a class boundary.
std::vector<std::size_t> LabelShard(const Dataset& data, std::size_t i, std::size_t n,
                                    std::size_t k, std::mt19937_64& rng) {
  const std::size_t pieces = n * k;
  if (pieces > data.size()) {
    throw Error("labels:" + std::to_string(k) + " with " + std::to_string(n) + " shards needs " +
                std::to_string(pieces) + " pieces but there are only " +
                std::to_string(data.size()) + " samples");
  }
  std::vector<std::size_t> order = Shuffled(data.size(), rng);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return data.y[a] < data.y[b]; });
  const std::vector<std::size_t> deal = Shuffled(pieces, rng);
  std::vector<std::size_t> out;
  for (std::size_t j = 0; j < k; ++j) {
    const std::vector<std::size_t> part = Part(order, deal[i * k + j], pieces);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

// For each class, proportions over the n shards ~ Dirichlet(alpha), drawn as
// normalised Gamma(alpha, 1) variables; the class's shuffled samples are cut
// at the cumulative proportions. Every shard computes the same cut points in
// the same order of floating-point operations, so the shards are disjoint
// and the last cut is exactly the end of the class.
std::vector<std::size_t> DirichletShard(const Dataset& data, std::size_t i, std::size_t n,
                                        double alpha, std::mt19937_64& rng) {
  std::vector<std::vector<std::size_t>> by_class(static_cast<std::size_t>(data.num_classes));
  for (const std::size_t s : Shuffled(data.size(), rng)) {
    by_class[static_cast<std::size_t>(data.y[s])].push_back(s);
  }
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<double> p(n);
  std::vector<std::size_t> out;
  for (const std::vector<std::size_t>& members : by_class) {
    double total = 0;
    for (double& share : p) total += (share = gamma(rng));
    if (!(total > 0)) {
      // With a tiny alpha every draw can underflow to 0; the limit of
      // Dirichlet(alpha -> 0) is the whole class on one random shard.
      std::fill(p.begin(), p.end(), 0.0);
      p[std::uniform_int_distribution<std::size_t>(0, n - 1)(rng)] = 1.0;
      total = 1.0;
    }
    double before = 0;
    for (std::size_t j = 0; j < i; ++j) before += p[j];
    const auto m = static_cast<double>(members.size());
    const auto begin = static_cast<std::size_t>(std::llround(before / total * m));
    const auto end = static_cast<std::size_t>(std::llround((before + p[i]) / total * m));
    out.insert(out.end(), members.begin() + static_cast<std::ptrdiff_t>(begin),
               members.begin() + static_cast<std::ptrdiff_t>(std::min(end, members.size())));
  }
  return out;
}

}  // namespace

ShardSpec ShardSpec::Parse(std::string_view text) {
  ShardSpec s;
  if (text == "iid") return s;
  const std::size_t colon = text.find(':');
  if (colon == std::string_view::npos) BadSpec(text);
  const std::string_view kind = text.substr(0, colon), value = text.substr(colon + 1);
  if (kind == "labels") {
    s.kind = Kind::kLabels;
    if (!ParseWhole(value, s.labels_per_shard) || s.labels_per_shard < 1) BadSpec(text);
  } else if (kind == "dirichlet") {
    s.kind = Kind::kDirichlet;
    if (!ParseWhole(value, s.alpha) || !(s.alpha > 0) || !std::isfinite(s.alpha)) BadSpec(text);
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
      // The shortest text that parses back to the same double: the spec
      // travels between programs as text and must mean the same split.
      char buf[32];
      const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, alpha);
      return "dirichlet:" + (ec == std::errc() ? std::string(buf, end) : std::to_string(alpha));
    }
  }
  return "iid";
}

ShardIndex ShardIndex::Parse(std::string_view text) {
  ShardIndex s;
  const std::size_t slash = text.find('/');
  const bool ok = slash != std::string_view::npos && ParseWhole(text.substr(0, slash), s.index) &&
                  ParseWhole(text.substr(slash + 1), s.count) && s.count >= 1 && s.index >= 0 &&
                  s.index < s.count;
  if (!ok) {
    throw Error("invalid shard '" + std::string(text) +
                "' (expected i/n with 0 <= i < n, e.g. 0/4)");
  }
  return s;
}

std::vector<std::size_t> MakeShard(const Dataset& data, ShardIndex shard, const ShardSpec& spec,
                                   std::uint64_t seed) {
  if (shard.count < 1 || shard.index < 0 || shard.index >= shard.count) {
    throw Error("invalid shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) +
                " (expected i/n with 0 <= i < n)");
  }
  const auto i = static_cast<std::size_t>(shard.index);
  const auto n = static_cast<std::size_t>(shard.count);
  if (n > data.size()) {
    throw Error("cannot cut " + std::to_string(data.size()) + " samples into " + std::to_string(n) +
                " shards");
  }
  std::mt19937_64 rng(seed);
  std::vector<std::size_t> out;
  switch (spec.kind) {
    case ShardSpec::Kind::kIid:
      out = Part(Shuffled(data.size(), rng), i, n);
      break;
    case ShardSpec::Kind::kLabels:
      if (spec.labels_per_shard < 1) BadSpec(spec.ToString());
      CheckClassLabels(data, spec);
      out = LabelShard(data, i, n, static_cast<std::size_t>(spec.labels_per_shard), rng);
      break;
    case ShardSpec::Kind::kDirichlet:
      if (!(spec.alpha > 0) || !std::isfinite(spec.alpha)) BadSpec(spec.ToString());
      CheckClassLabels(data, spec);
      out = DirichletShard(data, i, n, spec.alpha, rng);
      break;
  }
  // In data order: reads memory front to back, and the order carries no
  // information a trainer (which shuffles) would need.
  std::sort(out.begin(), out.end());
  return out;
}

RowPicker ShardPicker(ShardIndex shard, const ShardSpec& spec, std::uint64_t seed) {
  if (shard.count == 1) return {};
  return
      [shard, spec, seed](const Dataset& targets) { return MakeShard(targets, shard, spec, seed); };
}

}  // namespace fedsgd
