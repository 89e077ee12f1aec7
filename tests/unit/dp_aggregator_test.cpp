#include "dp_aggregator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

DpAggregator Make(double z, double clip, bool adaptive = false, double quantile = 0.5) {
  DpSettings s;
  s.noise_multiplier = z;
  s.clip = clip;
  s.adaptive_clip = adaptive;
  s.target_quantile = quantile;
  s.clip_lr = 0.2;
  return DpAggregator(std::make_unique<WeightedMeanAggregator>(), s);
}

double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

TEST(DpAggregatorTest, ClipsEachUpdateAndWeighsThemEqually) {
  DpAggregator agg = Make(1e-9, 1.0);  // noise far below float resolution
  agg.Begin(2);
  const std::vector<float> big = {6, 8}, small = {0.3f, 0.4f};  // norms 10 and 0.5
  agg.Add(big, 1000);  // the declared sample count does not matter
  agg.Add(small, 1);
  std::vector<float> out(2);
  agg.Finish(out);
  EXPECT_NEAR(out[0], (0.6 + 0.3) / 2, 1e-6);
  EXPECT_NEAR(out[1], (0.8 + 0.4) / 2, 1e-6);
  EXPECT_EQ(agg.count(), 2u);
  EXPECT_EQ(agg.name(), "dp(mean)");
}

TEST(DpAggregatorTest, DividesByTheFixedDenominatorNotTheCount) {
  DpAggregator agg = Make(1e-9, 10.0);
  agg.Begin(1);
  agg.SetDenominator(4);
  const std::vector<float> a = {1}, b = {3};
  agg.Add(a, 1);
  agg.Add(b, 1);
  std::vector<float> out(1);
  agg.Finish(out);
  EXPECT_NEAR(out[0], 4.0 / 4, 1e-6);  // the sum over 4 devices, 2 of them silent
}

TEST(DpAggregatorTest, NoiseOnTheMeanHasStddevZTimesClipOverDevices) {
  DpAggregator agg = Make(1.0, 2.0);
  constexpr std::size_t kSize = 200'000;
  agg.Begin(kSize);
  agg.SetDenominator(10);
  const std::vector<float> zero(kSize, 0.0f);
  for (int i = 0; i < 10; ++i) agg.Add(zero, 1);
  std::vector<float> out(kSize);
  agg.Finish(out);
  const double mean = std::accumulate(out.begin(), out.end(), 0.0) / kSize;
  double var = 0;
  for (float x : out) var += (x - mean) * (x - mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(std::sqrt(var / kSize), 1.0 * 2.0 / 10, 0.002);
}

TEST(DpAggregatorTest, OneHostileUpdateMovesTheResultByAtMostClipOverDevices) {
  DpAggregator agg = Make(1e-9, 1.0);
  constexpr std::size_t kSize = 1000;
  agg.Begin(kSize);
  agg.SetDenominator(5);
  const std::vector<float> huge(kSize, 1e30f);
  agg.Add(huge, 1e12);
  std::vector<float> out(kSize);
  agg.Finish(out);
  EXPECT_NEAR(Norm(out), 1.0 / 5, 1e-5);
}

TEST(DpAggregatorTest, AdaptiveClipFollowsTheTargetQuantile) {
  DpAggregator agg = Make(1.0, 0.1, /*adaptive=*/true, /*quantile=*/0.5);
  // 100 devices with update norms 1, 2, ..., 100: the median is ~50.
  std::vector<std::vector<float>> updates;
  for (int i = 1; i <= 100; ++i) updates.push_back({static_cast<float>(i)});
  std::vector<float> out(1);
  for (int round = 0; round < 300; ++round) {
    agg.Begin(1);
    agg.SetDenominator(100);
    for (const auto& u : updates) agg.Add(u, 1);
    agg.Finish(out);
  }
  EXPECT_GT(agg.clip(), 30.0);
  EXPECT_LT(agg.clip(), 75.0);
  EXPECT_GT(agg.last_unclipped_fraction(), 0.2);
  EXPECT_LT(agg.last_unclipped_fraction(), 0.8);
}

TEST(DpAggregatorTest, AdaptiveClipShrinksWhenEveryUpdateIsBelowIt) {
  DpAggregator agg = Make(1.0, 10.0, /*adaptive=*/true, /*quantile=*/0.5);
  const std::vector<float> tiny = {0.01f};
  std::vector<float> out(1);
  for (int round = 0; round < 20; ++round) {
    agg.Begin(1);
    agg.SetDenominator(100);
    for (int i = 0; i < 100; ++i) agg.Add(tiny, 1);
    agg.Finish(out);
  }
  // b ~ 1 each round: C x exp(-0.2 x 0.5) per round, 20 rounds: ~ x 0.135.
  EXPECT_LT(agg.clip(), 10.0 * 0.2);
  EXPECT_GT(agg.clip(), 10.0 * 0.08);
}

TEST(DpAggregatorTest, AdaptiveClipSplitsTheNoiseMultiplier) {
  const DpAggregator fixed = Make(1.0, 1.0);
  EXPECT_DOUBLE_EQ(fixed.UpdateNoiseMultiplier(10), 1.0);
  const DpAggregator adaptive = Make(1.0, 1.0, true);
  // 10 devices: sigma_b is capped at 10% of the budget: z / sqrt(0.9).
  EXPECT_NEAR(adaptive.QuantileNoiseStddev(10), 1 / (2 * std::sqrt(0.1)), 1e-12);
  EXPECT_NEAR(adaptive.UpdateNoiseMultiplier(10), 1 / std::sqrt(0.9), 1e-12);
  // 1000 devices: the paper's sigma_b = m / 20 = 50.
  EXPECT_DOUBLE_EQ(adaptive.QuantileNoiseStddev(1000), 50.0);
  EXPECT_NEAR(adaptive.UpdateNoiseMultiplier(1000), 1 / std::sqrt(1 - 1 / 10000.0), 1e-12);
}

TEST(DpAggregatorTest, ClipStateRoundTripsAndBadStateIsRefused) {
  DpAggregator a = Make(1.0, 0.1, true);
  a.ImportState(std::vector<double>{3.5});
  EXPECT_EQ(a.clip(), 3.5);
  EXPECT_EQ(a.ExportState(), std::vector<double>{3.5});
  EXPECT_THROW(a.ImportState(std::vector<double>{}), Error);
  EXPECT_THROW(a.ImportState(std::vector<double>{-1}), Error);
  EXPECT_THROW(a.ImportState(std::vector<double>{INFINITY}), Error);
  EXPECT_THROW(a.ImportState(std::vector<double>{1, 2}), Error);
}

}  // namespace
}  // namespace fedsgd
