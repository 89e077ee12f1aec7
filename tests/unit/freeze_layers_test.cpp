// Frozen layers (Plan::freeze_layers): which parameters a plan freezes, that
// local training never moves them (hogwild and sync, with momentum, decay
// and FedProx) while the rest still learns, and that the coordinator takes
// updates of the trainable part only and steps nothing else.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "aggregator.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/plan.h"
#include "fedsgd/trainer.h"
#include "round_manager.h"

namespace fedsgd {
namespace {

Plan WithModel(const std::string& model, long freeze) {
  Plan p;
  p.model = model;
  p.freeze_layers = freeze;
  return p;
}

TEST(FreezeLayersTest, FreezesTheFirstLayersWithParameters) {
  // mlp:4-3-2: layer 0 has 4x3 + 3 = 15 parameters, layer 1 has 3x2 + 2 = 8.
  EXPECT_EQ(WithModel("mlp:4-3-2", 0).FrozenParameters(), 0u);
  EXPECT_EQ(WithModel("mlp:4-3-2", 0).TrainableParameters(), 23u);
  EXPECT_EQ(WithModel("mlp:4-3-2", 1).FrozenParameters(), 15u);
  EXPECT_EQ(WithModel("mlp:4-3-2", 1).TrainableParameters(), 8u);
  EXPECT_EQ(WithModel("mlp:4-5-3-2", 2).FrozenParameters(), 25u + 18u);
  // A cnn's convolutions come first: c4k3 on 1x6x6 has 1x3x3x4 + 4 = 40.
  const Plan cnn = WithModel("cnn:1x6x6-c4k3-p2-f8-3", 1);
  EXPECT_EQ(cnn.FrozenParameters(), 40u);
  EXPECT_EQ(cnn.TrainableParameters(), cnn.architecture().ParameterCount() - 40u);
  EXPECT_NO_THROW(cnn.Validate());
}

TEST(FreezeLayersTest, OneLayerStaysTrainable) {
  EXPECT_THROW(WithModel("mlp:4-3-2", 2).Validate(), Error);
  EXPECT_THROW(WithModel("softmax:4-2", 1).Validate(), Error);
  EXPECT_THROW(WithModel("mlp:4-3-2", -1).Validate(), Error);
  try {
    WithModel("mlp:4-3-2", 5).Validate();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("freeze_layers (--freeze-layers) must be in 0..1"),
              std::string::npos)
        << e.what();
  }
}

TEST(FreezeLayersTest, InThePlanOnlyWhenOn) {
  EXPECT_FALSE(WithModel("mlp:4-3-2", 0).ToJson().contains("freeze_layers"));
  const Plan p = WithModel("mlp:4-3-2", 1);
  EXPECT_EQ(p.ToJson()["freeze_layers"], 1);
  EXPECT_EQ(Plan::FromJson(p.ToJson()).freeze_layers, 1);
}

// Three blobs in 6 dimensions.
Dataset Blobs(std::size_t n) {
  Dataset d;
  d.num_features = 6;
  d.num_classes = 3;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 3);
    for (int f = 0; f < 6; ++f) d.x.push_back((f % 3 == label ? 2.0f : -1.0f) + noise(rng));
    d.y.push_back(static_cast<float>(label));
  }
  return d;
}

class FrozenTraining : public ::testing::TestWithParam<std::tuple<TrainMode, int>> {};

TEST_P(FrozenTraining, NeverMovesFrozenParametersAndStillLearns) {
  const auto [mode, threads] = GetParam();
  const Dataset data = Blobs(900);
  const Architecture arch = Architecture::Parse("mlp:6-16-8-3");
  const std::size_t frozen = WithModel(arch.ToString(), 1).FrozenParameters();  // 6 x 16 + 16
  ASSERT_EQ(frozen, 112u);
  Model model = Model::Create(arch, 5);
  const std::vector<float> start = model.params;
  const double before = Evaluate(arch, model.params.data(), data).accuracy;
  TrainOptions o;
  o.mode = mode;
  o.threads = threads;
  o.batch = 16;
  o.epochs = 3;
  o.sgd.lr = 0.1f;
  o.sgd.momentum = 0.9f;
  o.sgd.weight_decay = 0.01f;
  o.prox_mu = 0.1f;
  o.frozen = frozen;
  LocalTrainer(o).Train(model, data);
  for (std::size_t i = 0; i < frozen; ++i) {
    ASSERT_EQ(model.params[i], start[i]) << "frozen parameter " << i << " moved";
  }
  std::size_t moved = 0;
  for (std::size_t i = frozen; i < start.size(); ++i) moved += model.params[i] != start[i];
  EXPECT_GT(moved, (start.size() - frozen) * 9 / 10) << "the last layer trains";
  EXPECT_GT(Evaluate(arch, model.params.data(), data).accuracy, std::max(before, 0.9));
}

INSTANTIATE_TEST_SUITE_P(AllModes, FrozenTraining,
                         ::testing::Values(std::make_tuple(TrainMode::kHogwild, 1),
                                           std::make_tuple(TrainMode::kHogwild, 2),
                                           std::make_tuple(TrainMode::kSync, 1),
                                           std::make_tuple(TrainMode::kSync, 3)));

// The backward pass skips what frozen layers would need: their weight
// gradients and the input gradient into them. The rest of the gradient is
// exactly as without freezing, and frozen entries are left untouched.
TEST(FreezeLayersTest, ForwardBackwardComputesTheTrainableGradientOnly) {
  for (const auto& [model, freeze] : std::vector<std::pair<const char*, long>>{
           {"mlp:6-5-4-3", 1},
           {"mlp:6-5-4-3", 2},
           {"mlp:6-5-4-3:relu:dropout=0.3", 1},
           {"cnn:1x6x6-c2k3-p2-f5-3", 1},    // every convolution frozen
           {"cnn:1x6x6-c2k3-c2k2-f5-3", 1},  // one of two: both still get gradients
           {"cnn:1x6x6-c2k3-p2-f5-f4-3", 2}}) {
    SCOPED_TRACE(std::string(model) + " freeze " + std::to_string(freeze));
    const Plan plan = WithModel(model, freeze);
    const Architecture& arch = plan.architecture();
    const std::size_t frozen = plan.FrozenParameters();
    ASSERT_GT(frozen, 0u);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.5f);
    const int n = 5;
    std::vector<float> params(arch.ParameterCount()),
        x(static_cast<std::size_t>(n) * arch.input_size()), y(n);
    for (float& p : params) p = normal(rng);
    for (float& v : x) v = normal(rng);
    for (int j = 0; j < n; ++j) y[j] = static_cast<float>(j % arch.num_classes());
    Workspace ws(arch, n);
    std::vector<float> full(params.size()), part(params.size(), -7.0f);
    std::mt19937_64 mask_a(3), mask_b(3);
    const float loss_full =
        ForwardBackward(arch, params.data(), x.data(), y.data(), n, full.data(), ws, &mask_a);
    const float loss_part = ForwardBackward(arch, params.data(), x.data(), y.data(), n, part.data(),
                                            ws, &mask_b, nullptr, nullptr, frozen);
    EXPECT_EQ(loss_full, loss_part);
    for (std::size_t i = frozen; i < params.size(); ++i) {
      ASSERT_EQ(full[i], part[i]) << "trainable parameter " << i;
    }
    // A cnn whose convolutions are not all frozen computes all of them (the
    // stages' backward pass runs as a whole); otherwise nothing frozen.
    const bool partial_conv = std::string(model).find("c2k2") != std::string::npos;
    std::size_t untouched = 0;
    for (std::size_t i = 0; i < frozen; ++i) untouched += part[i] == -7.0f;
    EXPECT_EQ(untouched, partial_conv ? 0u : frozen);
  }
}

TEST(FreezeLayersTest, TrainerRefusesFreezingEverything) {
  Model model = Model::Create(Architecture::Parse("mlp:6-4-3"), 1);
  TrainOptions o;
  o.frozen = model.params.size();
  EXPECT_THROW(LocalTrainer(o).Train(model, Blobs(30)), Error);
}

TEST(FreezeLayersTest, TheCoordinatorTakesAndStepsTheTrainablePartOnly) {
  Plan plan = WithModel("mlp:4-3-2", 1);  // 15 frozen, 8 trainable
  plan.server_optimizer = "momentum";
  RoundSettings s;
  s.min_devices = 2;
  RoundManager m(plan, s, 1, 0, std::vector<float>(23, 1.0f), MakeAggregator(plan));
  EXPECT_EQ(m.trainable(), 8u);
  for (const char* id : {"a", "b"}) m.devices().Join(wire::Join{id, 1, 1000, "t"}, id, "::1", 0);
  ASSERT_TRUE(m.ShouldOpen());
  m.OpenRound(0, 1000);
  const auto update = [](const std::string& id, std::size_t n, float v) {
    return wire::Update{id, 1, 0, 100, 0.5, "delta", 1.0, std::vector<float>(n, v), std::nullopt};
  };
  const auto whole = m.OnUpdate(update("a", 23, 0.5f), 100, 1);
  ASSERT_TRUE(whole.has_value()) << "an update of the whole model is refused";
  EXPECT_EQ(whole->reason, wire::RejectReason::kWrongSize);
  EXPECT_FALSE(m.OnUpdate(update("a", 8, 0.5f), 32, 1));
  EXPECT_FALSE(m.OnUpdate(update("b", 8, 0.25f), 32, 1));
  ASSERT_TRUE(m.ShouldClose(1));
  ClosedRound closed = m.CloseRound(1001);
  for (std::size_t i = 0; i < 15; ++i) EXPECT_EQ(closed.params[i], 1.0f) << i;
  for (std::size_t i = 15; i < 23; ++i) EXPECT_FLOAT_EQ(closed.params[i], 1.375f) << i;
}

}  // namespace
}  // namespace fedsgd
