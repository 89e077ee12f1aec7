// Shards (see shard.h): every kind is a partition of the data; labels:K and
// dirichlet:ALPHA give the label skew they promise; a seed fixes the result;
// specs and shard indices are parsed strictly.
#include "fedsgd/shard.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <utility>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// n samples of `classes` classes, labels in a repeating 0, 1, 2, ... pattern.
Dataset Labelled(std::size_t n, int classes) {
  Dataset d;
  d.num_features = 1;
  d.num_classes = classes;
  for (std::size_t i = 0; i < n; ++i) {
    d.x.push_back(static_cast<float>(i));
    d.y.push_back(static_cast<float>(i % static_cast<std::size_t>(classes)));
  }
  return d;
}

std::vector<std::vector<std::size_t>> AllShards(const Dataset& d, int n, const std::string& spec,
                                                std::uint64_t seed) {
  std::vector<std::vector<std::size_t>> shards;
  for (int i = 0; i < n; ++i) shards.push_back(MakeShard(d, {i, n}, ShardSpec::Parse(spec), seed));
  return shards;
}

void ExpectPartition(const Dataset& d, int n, const std::string& spec, std::uint64_t seed) {
  std::set<std::size_t> seen;
  std::size_t total = 0;
  for (const auto& shard : AllShards(d, n, spec, seed)) {
    total += shard.size();
    seen.insert(shard.begin(), shard.end());
  }
  EXPECT_EQ(total, seen.size()) << spec << " n=" << n << ": shards overlap";
  EXPECT_EQ(seen.size(), d.size()) << spec << " n=" << n << ": shards do not cover the data";
  EXPECT_LT(*seen.rbegin(), d.size());
}

// Per shard, the fraction of its samples in its most frequent class.
double LargestClassShare(const Dataset& d, const std::vector<std::size_t>& shard) {
  std::vector<int> counts(static_cast<std::size_t>(d.num_classes));
  for (std::size_t s : shard) counts[static_cast<std::size_t>(d.y[s])]++;
  return static_cast<double>(*std::max_element(counts.begin(), counts.end())) /
         static_cast<double>(shard.size());
}

TEST(ShardTest, EveryKindPartitionsTheData) {
  for (std::size_t size : {1000u, 997u}) {
    const Dataset d = Labelled(size, 10);
    for (const char* spec : {"iid", "labels:1", "labels:2", "labels:3", "dirichlet:0.1",
                             "dirichlet:1", "dirichlet:100", "dirichlet:1e-9"}) {
      for (int n : {1, 3, 5, 7}) ExpectPartition(d, n, spec, 7);
    }
  }
}

TEST(ShardTest, IidSharesAreEqual) {
  const Dataset d = Labelled(1003, 10);
  for (const auto& shard : AllShards(d, 4, "iid", 1)) {
    EXPECT_GE(shard.size(), 250u);
    EXPECT_LE(shard.size(), 251u);
    EXPECT_TRUE(std::is_sorted(shard.begin(), shard.end()));
  }
  EXPECT_EQ(MakeShard(d, {0, 1}, ShardSpec{}, 1).size(), d.size());
}

TEST(ShardTest, LabelsKLimitsTheClassesPerShard) {
  const Dataset d = Labelled(1000, 10);
  // Where n*K is a multiple of the 10 classes, no piece straddles two.
  for (const auto& [n, k] : {std::pair{10, 1}, std::pair{5, 2}, std::pair{10, 2}}) {
    for (std::uint64_t seed : {1u, 2u, 3u}) {
      std::set<float> all_classes;
      for (const auto& shard : AllShards(d, n, "labels:" + std::to_string(k), seed)) {
        std::set<float> classes;
        for (std::size_t s : shard) classes.insert(d.y[s]);
        EXPECT_LE(classes.size(), static_cast<std::size_t>(k)) << "n=" << n << " k=" << k;
        EXPECT_EQ(shard.size(), 1000u / static_cast<std::size_t>(n));
        all_classes.insert(classes.begin(), classes.end());
      }
      EXPECT_EQ(all_classes.size(), 10u);
    }
  }
}

TEST(ShardTest, DirichletAlphaControlsSkew) {
  const Dataset d = Labelled(20000, 10);
  auto mean_largest_share = [&](const char* spec) {
    double sum = 0;
    int counted = 0;
    for (const auto& shard : AllShards(d, 5, spec, 9)) {
      if (shard.empty()) continue;
      sum += LargestClassShare(d, shard);
      ++counted;
    }
    return sum / counted;
  };
  // Dirichlet(0.05) concentrates each class on about one shard.
  EXPECT_GT(mean_largest_share("dirichlet:0.05"), 0.4);
  // Dirichlet(1000) is close to iid: about 10% per class everywhere.
  EXPECT_LT(mean_largest_share("dirichlet:1000"), 0.13);
  for (const auto& shard : AllShards(d, 5, "dirichlet:1000", 9)) {
    EXPECT_NEAR(static_cast<double>(shard.size()), 4000.0, 400.0);
  }
}

TEST(ShardTest, DeterministicForASeedAndDifferentAcrossSeeds) {
  const Dataset d = Labelled(500, 5);
  for (const char* text : {"iid", "labels:2", "dirichlet:0.5"}) {
    const ShardSpec spec = ShardSpec::Parse(text);
    EXPECT_EQ(MakeShard(d, {1, 3}, spec, 4), MakeShard(d, {1, 3}, spec, 4)) << text;
    EXPECT_NE(MakeShard(d, {1, 3}, spec, 4), MakeShard(d, {1, 3}, spec, 5)) << text;
    EXPECT_NE(MakeShard(d, {1, 3}, spec, 4), MakeShard(d, {2, 3}, spec, 4)) << text;
  }
}

TEST(ShardTest, ParsesAndPrintsSpecs) {
  EXPECT_EQ(ShardSpec::Parse("iid").kind, ShardSpec::Kind::kIid);
  const ShardSpec labels = ShardSpec::Parse("labels:3");
  EXPECT_EQ(labels.kind, ShardSpec::Kind::kLabels);
  EXPECT_EQ(labels.labels_per_shard, 3);
  const ShardSpec dirichlet = ShardSpec::Parse("dirichlet:0.25");
  EXPECT_EQ(dirichlet.kind, ShardSpec::Kind::kDirichlet);
  EXPECT_EQ(dirichlet.alpha, 0.25);
  for (const char* text : {"iid", "labels:3", "dirichlet:0.25", "dirichlet:100", "dirichlet:1e-05",
                           "dirichlet:0.123456789012345"}) {
    EXPECT_EQ(ShardSpec::Parse(text).ToString(), text);
  }
  // The text form must mean exactly the same split when parsed back.
  ShardSpec odd;
  odd.kind = ShardSpec::Kind::kDirichlet;
  odd.alpha = 1.0 / 3.0;
  EXPECT_EQ(ShardSpec::Parse(odd.ToString()).alpha, odd.alpha);

  const ShardIndex index = ShardIndex::Parse("2/7");
  EXPECT_EQ(index.index, 2);
  EXPECT_EQ(index.count, 7);
  EXPECT_EQ(ShardIndex::Parse("0/1").count, 1);
}

TEST(ShardTest, RefusesBadSpecsAndIndices) {
  for (const char* bad : {"", "IID", "iid:", "niid", "labels", "labels:", "labels:0", "labels:-2",
                          "labels:x", "labels:2x", "labels: 2", "dirichlet:0", "dirichlet:-1",
                          "dirichlet:abc", "dirichlet:inf", "dirichlet:nan", "dirichlet:"}) {
    EXPECT_THROW(ShardSpec::Parse(bad), Error) << bad;
  }
  try {
    ShardSpec::Parse("labels:0");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'labels:0'"), std::string::npos) << e.what();
  }
  for (const char* bad :
       {"", "1", "/", "4/4", "5/4", "-1/4", "0/0", "0/-1", "a/b", "1/2/3", " 1/2", "1/2 "}) {
    EXPECT_THROW(ShardIndex::Parse(bad), Error) << bad;
  }
}

TEST(ShardTest, RefusesWhatCannotBeSplit) {
  const Dataset d = Labelled(100, 10);
  const ShardSpec iid;
  // Shard indices built by hand, not parsed.
  EXPECT_THROW(MakeShard(d, {4, 4}, iid, 1), Error);
  EXPECT_THROW(MakeShard(d, {-1, 4}, iid, 1), Error);
  EXPECT_THROW(MakeShard(d, {0, 0}, iid, 1), Error);
  // More shards, or labels:K pieces, than samples.
  EXPECT_THROW(MakeShard(Labelled(3, 2), {0, 4}, iid, 1), Error);
  EXPECT_THROW(MakeShard(d, {0, 60}, ShardSpec::Parse("labels:2"), 1), Error);
  // Label skew needs class labels.
  Dataset regression = d;
  regression.num_classes = 0;
  EXPECT_THROW(MakeShard(regression, {0, 2}, ShardSpec::Parse("labels:1"), 1), Error);
  EXPECT_THROW(MakeShard(regression, {0, 2}, ShardSpec::Parse("dirichlet:1"), 1), Error);
  EXPECT_EQ(MakeShard(regression, {0, 2}, iid, 1).size(), 50u);
  Dataset stray = d;
  stray.y[17] = 10;  // not below num_classes
  EXPECT_THROW(MakeShard(stray, {0, 2}, ShardSpec::Parse("dirichlet:1"), 1), Error);
  stray.y[17] = 2.5f;
  EXPECT_THROW(MakeShard(stray, {0, 2}, ShardSpec::Parse("labels:1"), 1), Error);
  // A spec built by hand with a value Parse would refuse.
  ShardSpec zero;
  zero.kind = ShardSpec::Kind::kLabels;
  zero.labels_per_shard = 0;
  EXPECT_THROW(MakeShard(d, {0, 2}, zero, 1), Error);
}

}  // namespace
}  // namespace fedsgd
