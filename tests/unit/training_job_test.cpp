// TrainingJob: one round's training on its own thread (FedAvg delta,
// FedSGD full-shard gradient, the learning rate over rounds, cancellation,
// a plan that does not fit).
#include "training_job.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "fedsgd/error.h"
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
  TrainingJob job(plan, data, ShareParams(global.params), 4, 3, 2, TrainMode::kHogwild, 1);
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

// Personalisation (Plan::personalize_steps): a device whose data is one
// class of three adapts the global model to it, and the personalised copy
// beats the global one on its held-out part; `last` fine-tunes only the
// last layer. The global update is the same as without it.
TEST(TrainingJobTest, PersonalisationFineTunesACopyAndScoresBoth) {
  Dataset all = Blobs(900);
  Dataset own;  // class 2 only: what label skew looks like from one device
  own.num_features = 3;
  own.num_classes = 3;
  for (std::size_t i = 0; i < all.y.size(); ++i) {
    if (all.y[i] != 2.0f) continue;
    own.x.insert(own.x.end(), all.x.begin() + static_cast<long>(i * 3),
                 all.x.begin() + static_cast<long>(i * 3 + 3));
    own.y.push_back(2.0f);
  }
  std::vector<std::size_t> train_rows(250), held_rows(own.y.size() - 250);
  for (std::size_t i = 0; i < train_rows.size(); ++i) train_rows[i] = i;
  for (std::size_t i = 0; i < held_rows.size(); ++i) held_rows[i] = 250 + i;
  const DatasetView train(own, train_rows), held_out(own, held_rows);
  for (const char* layers : {"all", "last"}) {
    Plan plan;
    plan.model = "mlp:3-8-3";
    plan.local_steps = 5;
    plan.batch = 16;
    plan.sgd.lr = 0.1f;
    plan.personalize_steps = 30;
    plan.personalize_layers = layers;
    plan.Validate();
    const Model global = Model::Create(plan.architecture(), 3);
    TrainingJob job(plan, train, ShareParams(global.params), 2, 1, 1, TrainMode::kSync, 1,
                    &held_out);
    TrainingResult r = RunJob(job);
    ASSERT_TRUE(r.error.empty()) << r.error;
    ASSERT_TRUE(r.evaluation && r.personal) << layers;
    EXPECT_EQ(r.personal->samples, r.evaluation->samples);
    EXPECT_GT(r.personal->accuracy, r.evaluation->accuracy) << layers;
    EXPECT_GT(r.personal->accuracy, 0.95) << layers;
    ASSERT_EQ(r.personal_params.size(), global.params.size());
    const std::size_t kept = plan.PersonalFrozenParameters();
    EXPECT_EQ(kept, std::string(layers) == "last" ? 3u * 8u + 8u : 0u);
    for (std::size_t i = 0; i < kept; ++i) ASSERT_EQ(r.personal_params[i], global.params[i]);

    Plan without = plan;
    without.personalize_steps = 0;
    TrainingJob plain(without, train, ShareParams(global.params), 2, 1, 1, TrainMode::kSync, 1,
                      &held_out);
    const TrainingResult q = RunJob(plain);
    EXPECT_FALSE(q.personal.has_value());
    EXPECT_EQ(q.payload, r.payload) << "the global update does not depend on it";
  }
}

TEST(TrainingJobTest, PersonalisationNeedsAHeldOutPartAndFedAvg) {
  Plan plan;
  plan.model = "mlp:3-8-3";
  plan.personalize_steps = 10;
  EXPECT_NO_THROW(plan.Validate());
  plan.eval_fraction = 0;
  EXPECT_THROW(plan.Validate(), Error);
  plan.eval_fraction = 0.1;
  plan.algorithm = Algorithm::kFedSgd;
  EXPECT_THROW(plan.Validate(), Error);
  plan.algorithm = Algorithm::kFedAvg;
  plan.personalize_layers = "first";
  EXPECT_THROW(plan.Validate(), Error);
  plan.personalize_layers = "last";
  EXPECT_EQ(Plan::FromJson(plan.ToJson()).ToJson(), plan.ToJson());
  EXPECT_EQ(plan.ToJson()["personalize_steps"], 10);
  plan.personalize_steps = 0;
  EXPECT_FALSE(plan.ToJson().contains("personalize_steps")) << "absent when off";
}

// With lr_round_decay G, round r trains exactly as a plan whose lr is
// lr x G^(r-1) does (sync, one thread: the same steps, bit for bit).
TEST(TrainingJobTest, RoundLrDecayTrainsWithTheDecayedRate) {
  const Dataset data = Blobs(300);
  Plan decayed;
  decayed.model = "softmax:3-3";
  decayed.batch = 16;
  decayed.sgd.lr = 0.2f;
  decayed.lr_round_decay = 0.5;
  Plan plain = decayed;
  plain.lr_round_decay = 1;
  plain.sgd.lr = decayed.RoundLr(3);
  EXPECT_FLOAT_EQ(plain.sgd.lr, 0.05f);
  const Model global = Model::Create(decayed.architecture(), 3);
  auto delta = [&](const Plan& plan) {
    TrainingJob job(plan, data, ShareParams(global.params), 3, 2, 1, TrainMode::kSync, 1);
    return RunJob(job).payload;
  };
  const std::vector<float> a = delta(decayed), b = delta(plain);
  ASSERT_EQ(a.size(), global.params.size());
  EXPECT_EQ(a, b);
  Plan undecayed = decayed;
  undecayed.lr_round_decay = 1;
  EXPECT_NE(a, delta(undecayed)) << "the decay changed the step";
}

TEST(TrainingJobTest, FedSgdSendsTheFullShardGradient) {
  const Dataset data = Blobs(100);
  Plan plan;
  plan.model = "softmax:3-3";
  plan.algorithm = Algorithm::kFedSgd;
  plan.batch = 7;  // uneven batches must still give the mean over all samples
  const Model global = Model::Create(plan.architecture(), 3);
  TrainingJob job(plan, data, ShareParams(global.params), 1, 0, 1, TrainMode::kSync, 1);
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
  TrainingJob job(plan, data, ShareParams(global.params), 1, 0, 2, TrainMode::kHogwild, 1);
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
  TrainingJob job(plan, data, ShareParams(global.params), 1, 0, 1, TrainMode::kSync, 1);
  const TrainingResult r = RunJob(job);
  EXPECT_NE(r.error.find("features"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace fedsgd
