#include "aggregator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

TEST(AggregatorTest, WeightedMeanWeighsBySampleCount) {
  auto agg = MakeAggregator("mean");
  agg->Begin(3);
  const std::vector<float> a = {1, 2, 3}, b = {4, 5, 6};
  agg->Add(a, 100);
  agg->Add(b, 300);
  std::vector<float> out(3);
  agg->Finish(out);
  EXPECT_FLOAT_EQ(out[0], 0.25f * 1 + 0.75f * 4);
  EXPECT_FLOAT_EQ(out[1], 0.25f * 2 + 0.75f * 5);
  EXPECT_FLOAT_EQ(out[2], 0.25f * 3 + 0.75f * 6);
  EXPECT_EQ(agg->count(), 2u);
}

TEST(AggregatorTest, BeginForgetsThePreviousRound) {
  WeightedMeanAggregator agg;
  agg.Begin(2);
  const std::vector<float> a = {10, 10}, b = {1, -1};
  agg.Add(a, 5);
  agg.Begin(2);
  agg.Add(b, 7);
  std::vector<float> out(2);
  agg.Finish(out);
  EXPECT_FLOAT_EQ(out[0], 1);
  EXPECT_FLOAT_EQ(out[1], -1);
  EXPECT_EQ(agg.count(), 1u);
}

TEST(AggregatorTest, HugeWeightsDoNotOverflowTheSum) {
  // float: 3e38 x 2^64 is Inf. The double sum keeps the mean exact.
  WeightedMeanAggregator agg;
  agg.Begin(2);
  const std::vector<float> big = {3e38f, -3e38f};
  agg.Add(big, 18446744073709551615.0);
  std::vector<float> out(2);
  agg.Finish(out);
  EXPECT_FLOAT_EQ(out[0], 3e38f);
  EXPECT_FLOAT_EQ(out[1], -3e38f);
}

TEST(AggregatorTest, MeanOfExtremeUpdatesStaysFinite) {
  WeightedMeanAggregator agg;
  agg.Begin(1);
  const std::vector<float> max = {std::numeric_limits<float>::max()};
  for (int i = 0; i < 3; ++i) agg.Add(max, 1e19);
  std::vector<float> out(1);
  agg.Finish(out);
  EXPECT_EQ(out[0], std::numeric_limits<float>::max());
}

TEST(AggregatorTest, UnknownRuleIsAnError) { EXPECT_THROW(MakeAggregator("bogus"), Error); }

}  // namespace
}  // namespace fedsgd
