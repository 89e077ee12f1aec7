// Median, trimmed mean, Krum and multi-Krum: against brute force on small
// random inputs, their fallbacks and buffer limit, and 2-of-10 attacks that
// pull the plain mean away but not them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "aggregator.h"
#include "krum_aggregator.h"
#include "median_aggregator.h"
#include "trimmed_mean_aggregator.h"

namespace fedsgd {
namespace {

using Updates = std::vector<std::vector<float>>;

Updates Random(std::size_t n, std::size_t p, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 1);
  Updates u(n, std::vector<float>(p));
  for (auto& row : u)
    for (float& x : row) x = normal(rng);
  return u;
}

std::vector<float> Aggregate(Aggregator& agg, const Updates& updates) {
  agg.Begin(updates[0].size());
  for (const auto& u : updates) agg.Add(u, 1.0 + static_cast<double>(u.size()));
  std::vector<float> out(updates[0].size());
  agg.Finish(out);
  return out;
}

std::vector<float> Column(const Updates& u, std::size_t j) {
  std::vector<float> c;
  for (const auto& row : u) c.push_back(row[j]);
  std::sort(c.begin(), c.end());
  return c;
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

constexpr double kBudget = 1 << 20;

TEST(RobustAggregatorTest, MedianMatchesBruteForce) {
  for (std::size_t n : {1, 2, 5, 6, 9}) {
    const Updates u = Random(n, 300, static_cast<unsigned>(n));  // > one column block
    MedianAggregator agg(kBudget);
    const auto out = Aggregate(agg, u);
    for (std::size_t j = 0; j < 300; ++j) {
      const auto c = Column(u, j);
      const float want =
          n % 2 ? c[n / 2] : static_cast<float>((double(c[n / 2 - 1]) + c[n / 2]) / 2);
      ASSERT_EQ(out[j], want) << "n " << n << " coordinate " << j;
    }
  }
}

TEST(RobustAggregatorTest, TrimmedMeanMatchesBruteForce) {
  for (std::size_t n : {3, 7, 10}) {
    const Updates u = Random(n, 300, 100 + static_cast<unsigned>(n));
    TrimmedMeanAggregator agg(0.2, kBudget);
    const auto out = Aggregate(agg, u);
    const std::size_t cut = static_cast<std::size_t>(std::floor(0.2 * double(n)));
    for (std::size_t j = 0; j < 300; ++j) {
      const auto c = Column(u, j);
      double s = 0;
      for (std::size_t k = cut; k < n - cut; ++k) s += c[k];
      ASSERT_NEAR(out[j], s / double(n - 2 * cut), 1e-6) << "n " << n << " coordinate " << j;
    }
    EXPECT_EQ(agg.stats().excluded, 2 * cut);
  }
}

TEST(RobustAggregatorTest, TrimmedMeanWithTooFewUpdatesKeepsTheMiddle) {
  const Updates u = {{1}, {5}};
  TrimmedMeanAggregator agg(0.49, kBudget);
  const auto out = Aggregate(agg, u);
  EXPECT_FLOAT_EQ(out[0], 3);  // floor(0.49 x 2) = 0: nothing cut
  const Updates three = {{1}, {5}, {100}};
  TrimmedMeanAggregator agg3(0.4, kBudget);  // floor(1.2) = 1 each end: the middle
  EXPECT_FLOAT_EQ(Aggregate(agg3, three)[0], 5);
}

// Krum by the paper's definition, written plainly.
std::vector<std::size_t> BruteKrum(const Updates& u, std::size_t f, std::size_t m) {
  const std::size_t n = u.size();
  std::vector<double> score(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<double> d;
    for (std::size_t j = 0; j < n; ++j)
      if (j != i) d.push_back(Distance(u[i], u[j]) * Distance(u[i], u[j]));
    std::sort(d.begin(), d.end());
    score[i] = std::accumulate(d.begin(), d.begin() + static_cast<long>(n - f - 2), 0.0);
  }
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](auto a, auto b) { return score[a] < score[b]; });
  idx.resize(m);
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST(RobustAggregatorTest, KrumAndMultiKrumMatchBruteForce) {
  for (unsigned seed = 1; seed <= 5; ++seed) {
    const Updates u = Random(9, 40, seed);
    KrumAggregator krum(false, 2, 0, kBudget);
    const auto out = Aggregate(krum, u);
    const auto want = BruteKrum(u, 2, 1);
    ASSERT_EQ(krum.selected(), want);
    EXPECT_EQ(out, u[want[0]]) << "Krum returns the chosen update itself";
    KrumAggregator multi(true, 2, 0, kBudget);
    const auto mout = Aggregate(multi, u);
    const auto mwant = BruteKrum(u, 2, 7);
    ASSERT_EQ(multi.selected(), mwant);
    for (std::size_t j = 0; j < 40; ++j) {
      double s = 0;
      for (auto i : mwant) s += u[i][j];
      ASSERT_NEAR(mout[j], s / 7, 1e-6);
    }
    EXPECT_EQ(multi.stats().excluded, 2u);
  }
}

TEST(RobustAggregatorTest, KrumWithTooFewUpdatesFallsBackToTheMedian) {
  const Updates u = Random(4, 10, 7);  // f = 1 needs n > 4
  KrumAggregator krum(false, 1, 0, kBudget);
  MedianAggregator median(kBudget);
  EXPECT_EQ(Aggregate(krum, u), Aggregate(median, u));
  EXPECT_NE(krum.stats().note.find("median"), std::string::npos) << krum.stats().note;
  EXPECT_TRUE(krum.selected().empty());
}

TEST(RobustAggregatorTest, BufferStopsAtItsBudget) {
  MedianAggregator agg(3 * 10 * sizeof(float));  // three updates of 10 floats
  agg.Begin(10);
  const std::vector<float> u(10, 1.0f);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(agg.full());
    agg.Add(u, 1);
  }
  EXPECT_TRUE(agg.full());
  EXPECT_EQ(agg.count(), 3u);
}

// 8 honest updates near h, 2 hostile ones.
enum class Attack { kSignFlip, kScale, kHuge };

Updates Attacked(Attack attack, std::vector<float>& honest_mean) {
  const std::size_t p = 200;
  std::mt19937 rng(42);
  std::normal_distribution<float> noise(0, 0.1f);
  Updates u(10, std::vector<float>(p));
  honest_mean.assign(p, 0);
  for (std::size_t i = 0; i < 8; ++i) {
    for (std::size_t j = 0; j < p; ++j) {
      u[i][j] = 1.0f + noise(rng);
      honest_mean[j] += u[i][j] / 8;
    }
  }
  for (std::size_t i = 8; i < 10; ++i) {
    for (std::size_t j = 0; j < p; ++j) {
      switch (attack) {
        case Attack::kSignFlip:
          u[i][j] = -10 * u[i - 8][j];
          break;
        case Attack::kScale:
          u[i][j] = 10 * u[i - 8][j];
          break;
        case Attack::kHuge:
          u[i][j] = 1e30f;
          break;
      }
    }
  }
  return u;
}

TEST(RobustAggregatorTest, TwoOfTenAttackersMoveTheMeanButNotTheRobustRules) {
  for (Attack attack : {Attack::kSignFlip, Attack::kScale, Attack::kHuge}) {
    std::vector<float> honest;
    const Updates u = Attacked(attack, honest);
    const double scale = std::sqrt(200.0);  // the honest mean's norm, about
    WeightedMeanAggregator mean;
    EXPECT_GT(Distance(Aggregate(mean, u), honest), scale) << "the plain mean is pulled away";
    MedianAggregator median(kBudget);
    TrimmedMeanAggregator trimmed(0.2, kBudget);
    KrumAggregator krum(false, 2, 0, kBudget);
    KrumAggregator multi(true, 2, 0, kBudget);
    for (Aggregator* rule : std::vector<Aggregator*>{&median, &trimmed, &krum, &multi}) {
      EXPECT_LT(Distance(Aggregate(*rule, u), honest), 0.1 * scale)
          << rule->name() << " under attack " << static_cast<int>(attack);
    }
  }
}

TEST(RobustAggregatorTest, MakeAggregatorBuildsEveryRuleOfThePlan) {
  for (const char* rule : {"mean", "median", "trimmed_mean", "krum", "multi_krum"}) {
    Plan plan;
    plan.aggregator = rule;
    EXPECT_EQ(MakeAggregator(plan)->name(), rule);
  }
  Plan plan;
  EXPECT_EQ(AggregationBufferBytes(plan, 10, 100), 10 * 100 * 4.0) << "adaptive bound, first round";
  plan.aggregator = "median";
  EXPECT_EQ(AggregationBufferBytes(plan, 10, 100), 2 * 10 * 100 * 4.0);
  plan.norm_bound = "off";
  EXPECT_EQ(AggregationBufferBytes(plan, 10, 100), 10 * 100 * 4.0);
  plan.aggregator = "mean";
  EXPECT_EQ(AggregationBufferBytes(plan, 10, 100), 0.0);
}

}  // namespace
}  // namespace fedsgd
