// TrainingJob: one round's training on its own thread (FedAvg delta,
// FedSGD full-shard gradient, cancellation, a plan that does not fit).
#include "training_job.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "fedsgd/network.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;

Dataset Blobs(std::size_t n) {
  Dataset d;
  d.num_features = 3;
  d.num_classes = 3;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  for (std::size_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(i % 3);
    for (int f = 0; f < 3; ++f) d.x.push_back((f == c ? 2.0f : 0.0f) + noise(rng));
    d.y.push_back(static_cast<float>(c));
  }
  return d;
}

TrainingResult RunJob(TrainingJob& job) {
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!job.done() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(job.done());
  return job.TakeResult();
}

TEST(TrainingJobTest, FedAvgDeltaLowersTheLoss) {
  const Dataset data = Blobs(600);
  Plan plan;
  plan.model = "softmax:3-3";
  plan.local_epochs = 2;
  plan.batch = 16;
  plan.sgd.lr = 0.1f;
  const Model global = Model::Create(plan.architecture(), 3);
  TrainingJob job(plan, data, global.params, 4, 3, 2, TrainMode::kHogwild, 1);
  const TrainingResult r = RunJob(job);
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.round, 4u);
  EXPECT_EQ(r.model_version, 3u);
  EXPECT_EQ(r.kind, "delta");
  EXPECT_EQ(r.samples, 600u);
  ASSERT_EQ(r.payload.size(), global.params.size());
  std::vector<float> after = global.params;
  for (std::size_t i = 0; i < after.size(); ++i) after[i] += r.payload[i];
  const Architecture arch = plan.architecture();
  EXPECT_LT(Evaluate(arch, after.data(), data).loss,
            Evaluate(arch, global.params.data(), data).loss);
  EXPECT_GT(r.samples_per_second, 0);
}

TEST(TrainingJobTest, FedSgdSendsTheFullShardGradient) {
  const Dataset data = Blobs(100);
  Plan plan;
  plan.model = "softmax:3-3";
  plan.algorithm = Algorithm::kFedSgd;
  plan.batch = 7;  // uneven batches must still give the mean over all samples
  const Model global = Model::Create(plan.architecture(), 3);
  TrainingJob job(plan, data, global.params, 1, 0, 1, TrainMode::kSync, 1);
  const TrainingResult r = RunJob(job);
  EXPECT_EQ(r.kind, "gradient");
  const Architecture arch = plan.architecture();
  Workspace ws(arch, 100);
  std::vector<float> expected(global.params.size());
  const float loss = ForwardBackward(arch, global.params.data(), data.x.data(), data.y.data(), 100,
                                     expected.data(), ws);
  for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(r.payload[i], expected[i], 1e-5);
  EXPECT_NEAR(r.loss, loss, 1e-5);
}

TEST(TrainingJobTest, CancelEndsItQuickly) {
  const Dataset data = Blobs(3000);
  Plan plan;
  plan.model = "mlp:3-64-3";
  plan.local_epochs = 100000;
  plan.batch = 8;
  const Model global = Model::Create(plan.architecture(), 3);
  TrainingJob job(plan, data, global.params, 1, 0, 2, TrainMode::kHogwild, 1);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(job.done());
  EXPECT_GT(job.progress(), 0.0);
  EXPECT_LT(job.progress(), 1.0);
  EXPECT_GT(job.samples_per_second(), 0.0);
  EXPECT_EQ(job.model_version(), 0u);
  const auto t0 = std::chrono::steady_clock::now();
  job.Cancel();
  const TrainingResult r = RunJob(job);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_TRUE(r.cancelled);
}

TEST(TrainingJobTest, APlanThatDoesNotFitTheDataIsAnErrorNotACrash) {
  const Dataset data = Blobs(30);
  Plan plan;
  plan.model = "softmax:5-3";
  const Model global = Model::Create(plan.architecture(), 3);
  TrainingJob job(plan, data, global.params, 1, 0, 1, TrainMode::kSync, 1);
  const TrainingResult r = RunJob(job);
  EXPECT_NE(r.error.find("features"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace fedsgd
