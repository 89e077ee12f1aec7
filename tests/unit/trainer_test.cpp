// LocalTrainer: both modes learn, sync is deterministic, stop / early stop /
// step limits / progress behave, and bad input is refused. Run under TSan in
// CI, which is what checks hogwild's lock-free updates for data races.
#include "fedsgd/trainer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "fedsgd/dataset_view.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"

namespace fedsgd {
namespace {

// Three well-separated Gaussian blobs in `features` dimensions.
Dataset Blobs(std::size_t n, int features, std::uint64_t seed) {
  Dataset d;
  d.num_features = features;
  d.num_classes = 3;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 3);
    for (int f = 0; f < features; ++f) {
      const float centre = (f % 3 == label) ? 2.0f : -1.0f;
      d.x.push_back(centre + noise(rng));
    }
    d.y.push_back(static_cast<float>(label));
  }
  return d;
}

TrainOptions Options(TrainMode mode, int threads) {
  TrainOptions o;
  o.mode = mode;
  o.threads = threads;
  o.batch = 16;
  o.epochs = 3;
  o.sgd.lr = 0.1f;
  o.seed = 7;
  return o;
}

double Accuracy(const Model& m, const Dataset& d) {
  return Evaluate(m.arch, m.params.data(), d).accuracy;
}

class TrainerModes : public ::testing::TestWithParam<std::tuple<TrainMode, int>> {};

TEST_P(TrainerModes, LearnsSeparableBlobs) {
  const auto [mode, threads] = GetParam();
  const Dataset data = Blobs(1500, 6, 1);
  Model model = Model::Create(Architecture::Parse("mlp:6-16-3"), 3);
  const double before = Accuracy(model, data);
  LocalTrainer trainer(Options(mode, threads));
  const TrainStats stats = trainer.Train(model, data);
  EXPECT_GT(Accuracy(model, data), 0.95) << "accuracy before training: " << before;
  EXPECT_EQ(stats.epochs, 3);
  EXPECT_EQ(stats.samples, 3u * 1500u);
  EXPECT_EQ(stats.steps, 3 * ((1500 + 15) / 16));
  EXPECT_TRUE(std::isfinite(stats.train_loss));
  EXPECT_FALSE(stats.stopped);
}

// A cnn trains through the same ForwardBackward in both modes: the blobs as
// 6x6 images (each class a pattern of stripes).
TEST_P(TrainerModes, CnnLearnsBlobsAsImages) {
  const auto [mode, threads] = GetParam();
  const Dataset data = Blobs(1500, 36, 1);
  Model model = Model::Create(Architecture::Parse("cnn:1x6x6-c4k3-p2-3"), 3);
  LocalTrainer trainer(Options(mode, threads));
  const TrainStats stats = trainer.Train(model, data);
  EXPECT_GT(Accuracy(model, data), 0.95);
  EXPECT_EQ(stats.samples, 3u * 1500u);
  EXPECT_TRUE(std::isfinite(stats.train_loss));
}

INSTANTIATE_TEST_SUITE_P(AllModes, TrainerModes,
                         ::testing::Values(std::make_tuple(TrainMode::kHogwild, 1),
                                           std::make_tuple(TrainMode::kHogwild, 4),
                                           std::make_tuple(TrainMode::kSync, 1),
                                           std::make_tuple(TrainMode::kSync, 3)));

TEST(TrainerTest, SyncIsDeterministicForSeedAndThreads) {
  const Dataset data = Blobs(700, 5, 2);
  TrainOptions o = Options(TrainMode::kSync, 3);
  o.sgd.momentum = 0.9f;
  Model a = Model::Create(Architecture::Parse("mlp:5-8-3:relu:dropout=0.2"), 1);
  Model b = a;
  LocalTrainer(o).Train(a, data);
  LocalTrainer(o).Train(b, data);
  EXPECT_EQ(a.params, b.params);
}

TEST(TrainerTest, SyncWithOneAndManyThreadsAgreeClosely) {
  // Same batches, same order; only the summation order of the gradient differs.
  const Dataset data = Blobs(300, 4, 3);
  Model one = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  Model many = one;
  LocalTrainer(Options(TrainMode::kSync, 1)).Train(one, data);
  LocalTrainer(Options(TrainMode::kSync, 4)).Train(many, data);
  for (std::size_t i = 0; i < one.params.size(); ++i) {
    EXPECT_NEAR(one.params[i], many.params[i], 1e-4) << "parameter " << i;
  }
}

TEST(TrainerTest, StopFlagEndsTrainingAtTheNextMiniBatch) {
  const Dataset data = Blobs(3000, 6, 4);
  for (TrainMode mode : {TrainMode::kHogwild, TrainMode::kSync}) {
    Model model = Model::Create(Architecture::Parse("mlp:6-16-3"), 3);
    std::atomic<bool> stop{true};
    TrainOptions o = Options(mode, 2);
    o.epochs = 1000;
    const TrainStats stats = LocalTrainer(o).Train(model, data, {}, &stop);
    EXPECT_TRUE(stats.stopped) << ToString(mode);
    EXPECT_LE(stats.steps, 2) << ToString(mode);
  }
}

TEST(TrainerTest, SlowdownChangesOnlyTheTimeAndStillStops) {
  const Dataset data = Blobs(300, 4, 3);
  TrainOptions o = Options(TrainMode::kSync, 2);
  o.epochs = 1;
  Model plain = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  Model slowed = plain;
  LocalTrainer(o).Train(plain, data);
  o.slowdown = 2;
  LocalTrainer(o).Train(slowed, data);
  EXPECT_EQ(plain.params, slowed.params);

  for (TrainMode mode : {TrainMode::kHogwild, TrainMode::kSync}) {
    TrainOptions slow = Options(mode, 2);
    slow.slowdown = 1e6;  // a mini-batch would take hours; the stop flag ends it
    std::atomic<bool> stop{false};
    std::jthread stopper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      stop = true;
    });
    Model m = Model::Create(Architecture::Parse("softmax:4-3"), 1);
    EXPECT_TRUE(LocalTrainer(slow).Train(m, data, {}, &stop).stopped) << ToString(mode);
  }
  o.slowdown = 0.5;
  EXPECT_THROW(LocalTrainer(o).Train(plain, data), Error);
}

TEST(TrainerTest, StopFromAnotherThreadWhileTraining) {
  const Dataset data = Blobs(3000, 6, 4);
  Model model = Model::Create(Architecture::Parse("mlp:6-16-3"), 3);
  std::atomic<bool> stop{false};
  TrainProgress progress;
  TrainOptions o = Options(TrainMode::kHogwild, 2);
  o.epochs = 1e6;
  std::jthread stopper([&] {
    while (progress.samples.load() < 5000) std::this_thread::yield();
    stop = true;
  });
  const TrainStats stats = LocalTrainer(o).Train(model, data, {}, &stop, &progress);
  EXPECT_TRUE(stats.stopped);
  EXPECT_GE(stats.samples, 5000u);
  EXPECT_EQ(progress.samples.load(), stats.samples);
}

TEST(TrainerTest, FractionalEpochsAndStepLimit) {
  const Dataset data = Blobs(320, 4, 5);
  Model model = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  TrainOptions o = Options(TrainMode::kHogwild, 2);
  o.epochs = 1.5;  // 20 steps per epoch -> 30 steps
  EXPECT_EQ(LocalTrainer(o).Train(model, data).steps, 30);
  o.max_steps = 7;
  EXPECT_EQ(LocalTrainer(o).Train(model, data).steps, 7);
  o.epochs = 0;  // steps only
  o.max_steps = 45;
  const TrainStats s = LocalTrainer(o).Train(model, data);
  EXPECT_EQ(s.steps, 45);
  EXPECT_EQ(s.epochs, 3);
}

TEST(TrainerTest, EarlyStopWhenTheLossStopsMoving) {
  const Dataset data = Blobs(300, 4, 6);
  Model model = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  TrainOptions o = Options(TrainMode::kSync, 1);
  o.epochs = 500;
  o.early_stop_delta = 1e-2;
  const TrainStats stats = LocalTrainer(o).Train(model, data);
  EXPECT_TRUE(stats.early_stopped);
  EXPECT_LT(stats.epochs, 500);
}

TEST(TrainerTest, ReportsEveryEpoch) {
  const Dataset data = Blobs(100, 4, 7);
  Model model = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  std::vector<EpochReport> reports;
  LocalTrainer(Options(TrainMode::kHogwild, 2)).Train(model, data, [&](const EpochReport& r) {
    reports.push_back(r);
  });
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[2].epoch, 3);
  EXPECT_EQ(reports[2].samples, 300u);
}

TEST(TrainerTest, LogitOffsetsAreTheSmoothedLogPriorTimesTau) {
  Dataset d = Blobs(6, 2, 1);  // labels 0, 1, 2, 0, 1, 2
  d.y = {0, 0, 0, 1, 1, 1};    // class 2 absent
  const std::vector<float> offsets = LogitOffsets(d, 3, 2.0f);
  ASSERT_EQ(offsets.size(), 3u);
  EXPECT_NEAR(offsets[0], 2.0 * std::log(4.0 / 9.0), 1e-6);
  EXPECT_NEAR(offsets[1], 2.0 * std::log(4.0 / 9.0), 1e-6);
  EXPECT_NEAR(offsets[2], 2.0 * std::log(1.0 / 9.0), 1e-6);
}

// Label skew in one shard: only classes 0 and 1 of 3. Plain training pushes
// the absent class's output bias down; with logit adjustment the absent
// class's probability is already tiny in training, so its bias barely moves.
TEST(TrainerTest, LogitAdjustmentStopsPushingDownAnAbsentClass) {
  Dataset data = Blobs(900, 6, 9);
  Dataset two_classes;
  two_classes.num_features = data.num_features;
  two_classes.num_classes = 3;
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (data.y[i] == 2) continue;
    two_classes.x.insert(two_classes.x.end(), data.sample(i), data.sample(i) + 6);
    two_classes.y.push_back(data.y[i]);
  }
  const Architecture arch = Architecture::Parse("softmax:6-3");
  const std::size_t bias2 = arch.Layout().back().bias_offset + 2;
  auto absent_bias_after = [&](float tau) {
    Model m = Model::Create(arch, 3);
    const float before = m.params[bias2];
    TrainOptions o = Options(TrainMode::kSync, 1);
    o.logit_adjustment = tau;
    LocalTrainer(o).Train(m, two_classes);
    return m.params[bias2] - before;
  };
  const float plain = absent_bias_after(0);
  const float adjusted = absent_bias_after(1);
  EXPECT_LT(plain, -0.1f);
  EXPECT_GT(adjusted, plain / 10);
  // A bad tau is refused.
  Model m = Model::Create(arch, 3);
  TrainOptions o = Options(TrainMode::kSync, 1);
  o.logit_adjustment = -1;
  EXPECT_THROW(LocalTrainer(o).Train(m, two_classes), Error);
}

// A view of some samples trains exactly as a copy of them would (the same
// samples in the same shuffled order), and byte features exactly as their
// float values: the trainer's gather is where both are resolved.
TEST(TrainerTest, AViewAndByteFeaturesTrainAsTheirCopies) {
  const Dataset data = Blobs(600, 6, 2);
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < data.size(); i += 3) rows.push_back(i);
  rows.push_back(data.size() - 1);
  const Architecture arch = Architecture::Parse("mlp:6-8-3");
  const TrainOptions o = Options(TrainMode::kSync, 2);
  Model on_view = Model::Create(arch, 3), on_copy = Model::Create(arch, 3);
  LocalTrainer(o).Train(on_view, DatasetView(data, rows));
  LocalTrainer(o).Train(on_copy, data.Subset(rows));
  EXPECT_EQ(on_view.params, on_copy.params);
  const std::vector<std::size_t> held = {1, 2, 4};
  const Evaluation a = Evaluate(arch, on_view.params.data(), DatasetView(data, held));
  const Evaluation b = Evaluate(arch, on_view.params.data(), data.Subset(held));
  EXPECT_EQ(a.samples, 3u);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.accuracy, b.accuracy);

  Dataset bytes;
  bytes.num_features = 6;
  bytes.num_classes = 3;
  bytes.byte_scale = 1.0f / 64;
  Dataset floats = bytes;
  for (std::size_t i = 0; i < data.size(); ++i) {
    for (int f = 0; f < 6; ++f) {
      const auto byte =
          static_cast<std::uint8_t>(std::clamp(data.sample(i)[f] * 32 + 96, 0.0f, 255.0f));
      bytes.bytes.push_back(byte);
      floats.x.push_back(static_cast<float>(byte) * bytes.byte_scale);
    }
  }
  bytes.y = floats.y = data.y;
  Model on_bytes = Model::Create(arch, 3), on_floats = Model::Create(arch, 3);
  LocalTrainer(o).Train(on_bytes, bytes);
  LocalTrainer(o).Train(on_floats, floats);
  EXPECT_EQ(on_bytes.params, on_floats.params);
  EXPECT_GT(Accuracy(on_bytes, floats), 0.9);
}

TEST(TrainerTest, ClassWeightsAreInverseFrequenciesWithMeanOne) {
  Dataset d = Blobs(6, 2, 1);
  d.y = {0, 0, 0, 0, 1, 1};  // 4 of class 0, 2 of class 1, class 2 absent
  const std::vector<float> w = ClassWeights(d, 3);
  ASSERT_EQ(w.size(), 3u);
  // 1/4 : 1/2 scaled to mean 1 over the two present classes.
  EXPECT_NEAR(w[0], 2.0 / 3.0, 1e-6);
  EXPECT_NEAR(w[1], 4.0 / 3.0, 1e-6);
  EXPECT_EQ(w[2], 1.0f);
  // Counted over a view's samples only.
  const std::vector<std::size_t> rows = {0, 4};
  const std::vector<float> balanced = ClassWeights(DatasetView(d, rows), 3);
  EXPECT_NEAR(balanced[0], 1.0, 1e-6);
  EXPECT_NEAR(balanced[1], 1.0, 1e-6);
  EXPECT_EQ(ParseClassWeighting("none"), ClassWeighting::kNone);
  EXPECT_EQ(ParseClassWeighting("inverse_frequency"), ClassWeighting::kInverseFrequency);
  EXPECT_EQ(ToString(ClassWeighting::kInverseFrequency), "inverse_frequency");
  EXPECT_THROW(ParseClassWeighting("balanced"), Error);
  EXPECT_THROW(ClassWeights(d, 0), Error);
}

// Two overlapping classes, 9 to 1: plain training mostly predicts the common
// class; inverse-frequency weighting moves the boundary toward it, so many
// more of the rare class's samples are recognised.
TEST(TrainerTest, InverseFrequencyWeightingFavoursTheRareClass) {
  Dataset data;
  data.num_features = 2;
  data.num_classes = 2;
  std::mt19937_64 rng(4);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (int i = 0; i < 2000; ++i) {
    const int label = i % 10 == 0 ? 1 : 0;
    const float centre = label == 1 ? 1.0f : -1.0f;
    data.x.push_back(centre + noise(rng));
    data.x.push_back(noise(rng));
    data.y.push_back(static_cast<float>(label));
  }
  const Architecture arch = Architecture::Parse("softmax:2-2");
  auto rare_recall = [&](ClassWeighting weighting) {
    Model m = Model::Create(arch, 3);
    TrainOptions o = Options(TrainMode::kSync, 1);
    o.epochs = 5;
    o.class_weighting = weighting;
    LocalTrainer(o).Train(m, data);
    Workspace ws(arch, 1);
    int found = 0, rare = 0;
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (data.y[i] != 1) continue;
      rare += 1;
      found +=
          static_cast<int>(Score(arch, m.params.data(), data.sample(i), &data.y[i], 1, ws).correct);
    }
    return static_cast<double>(found) / rare;
  };
  const double plain = rare_recall(ClassWeighting::kNone);
  const double weighted = rare_recall(ClassWeighting::kInverseFrequency);
  EXPECT_LT(plain, 0.6);      // 0.445 on this data
  EXPECT_GT(weighted, 0.75);  // 0.87
  EXPECT_GT(weighted, plain + 0.25);
}

TEST(TrainerTest, RefusesDataThatDoesNotFitTheModel) {
  const Dataset data = Blobs(100, 4, 8);
  Model wrong_inputs = Model::Create(Architecture::Parse("softmax:5-3"), 1);
  EXPECT_THROW(LocalTrainer(Options(TrainMode::kSync, 1)).Train(wrong_inputs, data), Error);
  Model too_few_classes = Model::Create(Architecture::Parse("softmax:4-2"), 1);
  EXPECT_THROW(LocalTrainer(Options(TrainMode::kSync, 1)).Train(too_few_classes, data), Error);
  Model ok = Model::Create(Architecture::Parse("softmax:4-3"), 1);
  EXPECT_THROW(LocalTrainer(Options(TrainMode::kSync, 1)).Train(ok, Dataset{}), Error);
  TrainOptions zero_threads = Options(TrainMode::kSync, 0);
  EXPECT_THROW(LocalTrainer(zero_threads).Train(ok, data), Error);
}

TEST(TrainerTest, ParsesModes) {
  EXPECT_EQ(ParseTrainMode("hogwild"), TrainMode::kHogwild);
  EXPECT_EQ(ParseTrainMode("sync"), TrainMode::kSync);
  EXPECT_THROW(ParseTrainMode("async"), Error);
}

}  // namespace
}  // namespace fedsgd
