// HoldOut: the federated-evaluation split is disjoint, complete, stratified
// and seeded.
#include "fedsgd/holdout.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// n samples, label i % classes, one feature holding the sample's index.
Dataset Labelled(std::size_t n, int classes) {
  Dataset d;
  d.num_features = 1;
  d.num_classes = classes;
  for (std::size_t i = 0; i < n; ++i) {
    d.x.push_back(static_cast<float>(i));
    d.y.push_back(static_cast<float>(static_cast<int>(i) % classes));
  }
  return d;
}

TEST(HoldOutTest, DisjointCompleteAndStratified) {
  const Dataset d = Labelled(1000, 4);
  const HoldOutSplit s = HoldOut(d, 0.1, 7);
  EXPECT_EQ(s.eval.size(), 100u);
  EXPECT_EQ(s.train.size(), 900u);
  std::vector<std::size_t> all = s.train;
  all.insert(all.end(), s.eval.begin(), s.eval.end());
  std::sort(all.begin(), all.end());
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], i) << "lost or repeated";
  std::map<int, int> per_class;
  for (const std::size_t i : s.eval) per_class[static_cast<int>(d.y[i])] += 1;
  for (int c = 0; c < 4; ++c) EXPECT_EQ(per_class[c], 25) << "class " << c;
}

TEST(HoldOutTest, SeededAndDifferentPerSeed) {
  const Dataset d = Labelled(500, 2);
  EXPECT_EQ(HoldOut(d, 0.2, 1).eval, HoldOut(d, 0.2, 1).eval);
  EXPECT_NE(HoldOut(d, 0.2, 1).eval, HoldOut(d, 0.2, 2).eval);
}

TEST(HoldOutTest, ZeroHoldsOutNothingAndEveryClassKeepsATrainingSample) {
  const Dataset d = Labelled(300, 3);
  EXPECT_TRUE(HoldOut(d, 0, 1).eval.empty());
  EXPECT_EQ(HoldOut(d, 0, 1).train.size(), 300u);
  const Dataset one = Labelled(3, 3);  // one sample per class
  EXPECT_EQ(HoldOut(one, 0.9, 1).train.size(), 3u);
}

TEST(HoldOutTest, RefusesAFractionOutsideZeroToOne) {
  const Dataset d = Labelled(10, 2);
  EXPECT_THROW(HoldOut(d, 1.0, 1), Error);
  EXPECT_THROW(HoldOut(d, -0.1, 1), Error);
}

}  // namespace
}  // namespace fedsgd
