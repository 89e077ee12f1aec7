// Server optimisers against hand-computed steps, and a run interrupted
// after round 3 and resumed from SQLite continuing bit-identically.
#include "server_optimizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "checkpoint_store.h"
#include "fedsgd/error.h"
#include "round_manager.h"

namespace fedsgd {
namespace {

Plan WithOptimizer(const std::string& name) {
  Plan plan;
  plan.model = "softmax:2-2";  // 6 parameters
  plan.server_optimizer = name;
  plan.server_lr = 0.5;
  return plan;
}

TEST(ServerOptimizerTest, SgdIsTheFedAvgStep) {
  ServerOptimizer sgd(WithOptimizer("sgd"));
  std::vector<float> w = {1, 2};
  const std::vector<float> d = {2, -4};
  ServerState state;
  sgd.Step(w, d, 1.0, state);
  EXPECT_FLOAT_EQ(w[0], 2);
  EXPECT_FLOAT_EQ(w[1], 0);
  EXPECT_TRUE(state.empty()) << "sgd keeps no state";
}

TEST(ServerOptimizerTest, MomentumAccumulates) {
  Plan plan = WithOptimizer("momentum");
  plan.server_momentum = 0.5;
  ServerOptimizer opt(plan);
  std::vector<float> w = {0};
  const std::vector<float> d = {1};
  ServerState state;
  opt.Step(w, d, 1.0, state);  // m = 1, w = 0.5
  opt.Step(w, d, 1.0, state);  // m = 1.5, w = 1.25
  EXPECT_FLOAT_EQ(w[0], 1.25f);
  EXPECT_DOUBLE_EQ(state[ServerOptimizer::kStateName][0], 1.5);
}

TEST(ServerOptimizerTest, AdamYogiAdagradFollowReddiAlgorithm2) {
  for (const std::string name : {"adam", "yogi", "adagrad"}) {
    Plan plan = WithOptimizer(name);
    ServerOptimizer opt(plan);
    std::vector<float> w = {0};
    const std::vector<float> d = {2};
    ServerState state;
    double m = 0, v = plan.server_tau * plan.server_tau, want = 0;
    for (int step = 0; step < 3; ++step) {
      opt.Step(w, d, 1.0, state);
      m = 0.9 * m + 0.1 * 2;
      if (name == "adam") v = 0.99 * v + 0.01 * 4;
      if (name == "yogi") v = v - 0.01 * 4 * (v - 4 > 0 ? 1 : -1);
      if (name == "adagrad") v = v + 4;
      want = static_cast<float>(want + 0.5 * m / (std::sqrt(v) + plan.server_tau));
    }
    EXPECT_NEAR(w[0], want, 1e-6) << name;
    EXPECT_EQ(state[ServerOptimizer::kStateName].size(), 2u);
  }
}

TEST(ServerOptimizerTest, FedSgdSgdKeepsTodaysStepAndOthersUseMinusLrGradient) {
  ServerOptimizer opt(WithOptimizer("momentum"));
  std::vector<float> w = {0};
  const std::vector<float> g = {4};
  ServerState state;
  opt.Step(w, g, -0.25, state);  // delta = -1, m = -1, w = -0.5
  EXPECT_FLOAT_EQ(w[0], -0.5f);
}

TEST(ServerOptimizerTest, AStoredStateOfTheWrongSizeIsRefused) {
  ServerOptimizer opt(WithOptimizer("adam"));
  ServerState state{{ServerOptimizer::kStateName, std::vector<double>(3)}};
  EXPECT_THROW(opt.CheckState(state, 6), Error);
  Plan plan = WithOptimizer("adam");
  EXPECT_THROW(
      RoundManager(plan, RoundSettings{}, 1, 0, std::vector<float>(6), MakeAggregator(plan), state),
      Error);
}

// Rounds with fixed, varied updates from three devices.
class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fedsgd_resume_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static void PlayRound(RoundManager& m, CheckpointStore& store, std::uint64_t round) {
    const double now = static_cast<double>(round);
    for (const char* id : {"a", "b", "c"})
      m.devices().Join(wire::Join{id, 1, 1000, "test"}, std::string("rid-") + id, "127.0.0.1", now);
    ASSERT_EQ(m.OpenRound(now, now), round);
    std::mt19937 rng(static_cast<unsigned>(round));
    std::normal_distribution<float> normal(0, 1);
    std::uint64_t samples = 50;
    for (const char* id : {"a", "b", "c"}) {
      std::vector<float> delta(6);
      for (float& x : delta) x = normal(rng);
      samples += 25;
      ASSERT_FALSE(m.OnUpdate(
          wire::Update{id, round, round - 1, samples, 0.5, "delta", 1.0, delta, std::nullopt}, 100,
          now));
    }
    ClosedRound closed = m.CloseRound(now);
    store.CommitRound(closed.record, closed.params, closed.state);
    m.Commit(std::move(closed));
  }
  std::unique_ptr<RoundManager> Start(CheckpointStore& store, const Plan& plan) {
    RunState run = store.StartRun(plan.ToJson(), std::vector<float>(6, 0.5f), false);
    RoundSettings s;
    s.rounds = 6;
    s.min_devices = 3;
    return std::make_unique<RoundManager>(plan, s, run.run_id, run.round, std::move(run.params),
                                          MakeAggregator(plan), std::move(run.state));
  }
  void ExpectBitIdenticalResume(const std::string& optimizer) {
    Plan plan = WithOptimizer(optimizer);
    auto straight_store = CheckpointStore::Open((dir_ / "straight.db").string());
    auto straight = Start(*straight_store, plan);
    for (std::uint64_t r = 1; r <= 6; ++r) PlayRound(*straight, *straight_store, r);

    const std::string path = (dir_ / "resumed.db").string();
    {
      auto store = CheckpointStore::Open(path);
      auto first = Start(*store, plan);
      for (std::uint64_t r = 1; r <= 3; ++r) PlayRound(*first, *store, r);
    }
    auto store = CheckpointStore::Open(path);
    auto resumed = Start(*store, plan);
    ASSERT_EQ(resumed->version(), 3u);
    for (std::uint64_t r = 4; r <= 6; ++r) PlayRound(*resumed, *store, r);

    const auto& a = straight->params();
    const auto& b = resumed->params();
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << optimizer;
    ASSERT_EQ(straight->state().size(), resumed->state().size());
    ASSERT_TRUE(straight->state().count(ServerOptimizer::kStateName)) << optimizer;
    ASSERT_TRUE(straight->state().count("norm_bound"));
    for (const auto& [name, values] : straight->state()) {
      const auto& other = resumed->state().at(name);
      ASSERT_EQ(values.size(), other.size()) << name;
      EXPECT_EQ(std::memcmp(values.data(), other.data(), values.size() * sizeof(double)), 0)
          << optimizer << " " << name;
    }
    EXPECT_EQ(store->LoadState(resumed->run_id()), resumed->state()) << "the committed state";
    EXPECT_NE(a, std::vector<float>(6, 0.5f)) << "the rounds moved the model";
  }

  std::filesystem::path dir_;
};

TEST_F(ResumeTest, AdamResumesBitIdentical) { ExpectBitIdenticalResume("adam"); }
TEST_F(ResumeTest, MomentumResumesBitIdentical) { ExpectBitIdenticalResume("momentum"); }

TEST_F(ResumeTest, ResumingWithAnotherStrategyIsRefusedUnlessNewRun) {
  Plan plan = WithOptimizer("adam");
  const std::string path = (dir_ / "run.db").string();
  auto store = CheckpointStore::Open(path);
  auto first = Start(*store, plan);
  PlayRound(*first, *store, 1);
  Plan median = plan;
  median.aggregator = "median";
  EXPECT_THROW(store->StartRun(median.ToJson(), std::vector<float>(6, 0.5f), false), Error);
  Plan yogi = plan;
  yogi.server_optimizer = "yogi";
  EXPECT_THROW(store->StartRun(yogi.ToJson(), std::vector<float>(6, 0.5f), false), Error);
  const RunState fresh = store->StartRun(yogi.ToJson(), std::vector<float>(6, 0.5f), true);
  EXPECT_FALSE(fresh.resumed);
  EXPECT_TRUE(fresh.state.empty()) << "a new run starts without the old run's moments";
}

}  // namespace
}  // namespace fedsgd
