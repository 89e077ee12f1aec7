// Norm bounding and the weight cap, including the attack of issue 9: one
// finite hostile update (1e30 per weight, a huge sample count) under the
// default plan cannot move the model further than the bound.
#include <gtest/gtest.h>

#include <cmath>

#include "fedsgd/error.h"
#include "norm_bounding_aggregator.h"
#include "round_manager.h"

namespace fedsgd {
namespace {

std::vector<float> Fill(float v, std::size_t n = 6) { return std::vector<float>(n, v); }

double StepNorm(const std::vector<float>& before, const std::vector<float>& after) {
  double s = 0;
  for (std::size_t i = 0; i < before.size(); ++i)
    s += (double(after[i]) - before[i]) * (double(after[i]) - before[i]);
  return std::sqrt(s);
}

// One round of the default plan: three honest devices (updates of norm
// ~0.25 and 100 samples) and, when hostile, a fourth sending 1e30 per weight
// and claiming 1e15 samples. Returns the closed round.
ClosedRound PlayRound(RoundManager& m, std::uint64_t round, bool hostile) {
  const double now = static_cast<double>(round);
  // The hostile device declares its huge sample count at join too, so the
  // coordinator's samples_exceeded check lets the update reach the rule.
  for (const char* id : {"a", "b", "c"})
    m.devices().Join(wire::Join{id, 1, 100, "test"}, std::string("rid-") + id, "127.0.0.1", now);
  m.devices().Join(wire::Join{"evil", 1, 1000000000000000ull, "test"}, "rid-evil", "127.0.0.1",
                   now);
  EXPECT_EQ(m.OpenRound(now, now), round);
  float v = 0.09f;
  for (const char* id : {"a", "b", "c"}) {
    v += 0.01f;
    EXPECT_FALSE(m.OnUpdate(
        wire::Update{id, round, round - 1, 100, 0.5, "delta", 1.0, Fill(v), std::nullopt}, 100,
        now));
  }
  if (hostile) {
    EXPECT_FALSE(m.OnUpdate(wire::Update{"evil", round, round - 1, 1000000000000000ull, 0.5,
                                         "delta", 1.0, Fill(1e30f), std::nullopt},
                            100, now));
  }
  return m.CloseRound(now);
}

TEST(NormBoundingTest, OneHostileUpdateMovesTheModelNoMoreThanTheBound) {
  Plan plan;  // the defaults: mean, adaptive:2, sgd with server_lr 1
  plan.model = "softmax:2-2";
  RoundSettings s;
  s.min_devices = 4;
  s.rounds = 5;
  RoundManager m(plan, s, 1, 0, Fill(0), MakeAggregator(plan));
  // The median of the four norms (0.10, 0.11, 0.12 and 1e30, x sqrt 6):
  // the mean of the middle two.
  const double honest_median = std::sqrt(6.0) * 0.115;
  for (std::uint64_t round = 1; round <= 3; ++round) {
    // Round 1 has no history (clipped against its own median); later rounds
    // use the previous round's median.
    const std::vector<float> before = m.params();
    ClosedRound closed = PlayRound(m, round, true);
    const nlohmann::json& agg = closed.record.aggregation;
    ASSERT_TRUE(agg["norm_bound"].is_number()) << agg.dump();
    const double bound = agg["norm_bound"].get<double>();
    EXPECT_LE(bound, 2 * honest_median * 1.0001) << agg.dump();
    EXPECT_GE(agg["clipped"].get<int>(), 1) << agg.dump();
    const double step = StepNorm(before, closed.params);
    EXPECT_LE(step, bound * (1 + 1e-6)) << "round " << round << ": " << agg.dump();
    EXPECT_TRUE(std::isfinite(step));
    m.Commit(std::move(closed));
  }
  ASSERT_EQ(m.state().count(NormBoundingAggregator::kStateName), 1u);
}

TEST(NormBoundingTest, HonestUpdatesWithinTheBoundAreUntouched) {
  Plan plan;
  plan.model = "softmax:2-2";
  RoundSettings s;
  s.min_devices = 3;
  RoundManager m(plan, s, 1, 0, Fill(0), MakeAggregator(plan));
  ClosedRound closed = PlayRound(m, 1, false);
  EXPECT_EQ(closed.record.aggregation["clipped"].get<int>(), 0);
  EXPECT_FLOAT_EQ(closed.params[0], 0.11f) << "the plain mean of 0.10, 0.11, 0.12";
}

TEST(NormBoundingTest, FixedBoundClipsAndWeightCapApplies) {
  NormBound bound = NormBound::Parse("fixed:1");
  NormBoundingAggregator agg(std::make_unique<WeightedMeanAggregator>(), bound, 10, 1e6);
  agg.Begin(2);
  agg.Add(std::vector<float>{3, 4}, 1000);  // norm 5 -> (0.6, 0.8), weight 10
  agg.Add(std::vector<float>{0, 0}, 10);
  std::vector<float> out(2);
  agg.Finish(out);
  EXPECT_FLOAT_EQ(out[0], 0.3f);
  EXPECT_FLOAT_EQ(out[1], 0.4f);
  EXPECT_EQ(agg.stats().clipped, 1u);
  EXPECT_EQ(agg.stats().weight_capped, 1u);
  EXPECT_DOUBLE_EQ(*agg.stats().norm_bound, 1.0);
}

TEST(NormBoundingTest, AdaptiveBoundUsesThePreviousRoundsMedianFromTheState) {
  NormBoundingAggregator agg(std::make_unique<WeightedMeanAggregator>(),
                             NormBound::Parse("adaptive:2"), 0, 1e6);
  agg.LoadState({{NormBoundingAggregator::kStateName, {0.5}}});
  agg.Begin(1);
  EXPECT_FALSE(agg.full());
  agg.Add(std::vector<float>{3}, 1);
  std::vector<float> out(1);
  agg.Finish(out);
  EXPECT_FLOAT_EQ(out[0], 1.0f) << "clipped to 2 x 0.5";
  ServerState saved;
  agg.SaveState(saved);
  EXPECT_DOUBLE_EQ(saved[NormBoundingAggregator::kStateName][0], 3.0) << "this round's median";
}

TEST(NormBoundingTest, ParsesTheFlag) {
  EXPECT_EQ(NormBound::Parse("off").kind, NormBound::Kind::kOff);
  EXPECT_EQ(NormBound::Parse("fixed:2.5").value, 2.5);
  EXPECT_EQ(NormBound::Parse("adaptive:3").kind, NormBound::Kind::kAdaptive);
  for (const char* bad : {"", "fixed", "fixed:", "fixed:-1", "adaptive:0", "adaptive:x", "on:1",
                          "fixed:1e999", "fixed:2x"}) {
    EXPECT_THROW(NormBound::Parse(bad), Error) << bad;
  }
}

}  // namespace
}  // namespace fedsgd
