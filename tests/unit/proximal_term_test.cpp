// FedProx: the proximal gradient kernel, one training step checked by hand,
// and that the term keeps the trained model nearer its starting point.
#include "fedsgd/proximal_term.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/trainer.h"

namespace fedsgd {
namespace {

// Two noisy Gaussian blobs in 4 dimensions.
Dataset Blobs(std::size_t n, std::uint64_t seed) {
  Dataset d;
  d.num_features = 4;
  d.num_classes = 2;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 2);
    for (int f = 0; f < 4; ++f) d.x.push_back((label ? 1.0f : -1.0f) + noise(rng));
    d.y.push_back(static_cast<float>(label));
  }
  return d;
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s += d * d;
  }
  return std::sqrt(s);
}

TEST(ProximalTermTest, AddsMuTimesTheDistanceToTheAnchor) {
  std::vector<float> g = {1.0f, -2.0f, 0.5f};
  const std::vector<float> w = {3.0f, 0.0f, -1.0f};
  const std::vector<float> anchor = {1.0f, 1.0f, -1.0f};
  AddProximalGradient(g.data(), w.data(), anchor.data(), g.size(), 0.5f);
  EXPECT_FLOAT_EQ(g[0], 1.0f + 0.5f * 2.0f);
  EXPECT_FLOAT_EQ(g[1], -2.0f + 0.5f * -1.0f);
  EXPECT_FLOAT_EQ(g[2], 0.5f);
  std::vector<float> unchanged = g;
  AddProximalGradient(unchanged.data(), w.data(), anchor.data(), g.size(), 0.0f);
  EXPECT_EQ(unchanged, g);
}

// Two full-batch steps (the first has w == w_global, so only the second
// shows the term): w1 = w0 - lr g(w0); w2 = w1 - lr (g(w1) + mu (w1 - w0)).
TEST(ProximalTermTest, SecondStepMatchesAHandComputation) {
  const Dataset data = Blobs(32, 3);
  const Model start = Model::Create(Architecture::Parse("softmax:4-2"), 5);
  const float lr = 0.5f, mu = 2.0f;
  const std::size_t count = start.params.size();

  Workspace ws(start.arch, 32);
  std::vector<float> grad(count);
  std::vector<float> w1 = start.params;
  ForwardBackward(start.arch, w1.data(), data.x.data(), data.y.data(), 32, grad.data(), ws);
  for (std::size_t i = 0; i < count; ++i) w1[i] -= lr * grad[i];
  std::vector<float> expected = w1;
  ForwardBackward(start.arch, w1.data(), data.x.data(), data.y.data(), 32, grad.data(), ws);
  for (std::size_t i = 0; i < count; ++i) {
    expected[i] -= lr * (grad[i] + mu * (w1[i] - start.params[i]));
  }

  for (const TrainMode mode : {TrainMode::kSync, TrainMode::kHogwild}) {
    TrainOptions o;
    o.mode = mode;
    o.threads = 1;
    o.batch = 32;  // the whole set: the shuffle changes only the summation order
    o.max_steps = 2;
    o.epochs = 2;
    o.sgd.lr = lr;
    o.prox_mu = mu;
    Model m = start;
    LocalTrainer(o).Train(m, data);
    for (std::size_t i = 0; i < count; ++i) {
      EXPECT_NEAR(m.params[i], expected[i], 1e-5) << ToString(mode) << " weight " << i;
    }
  }
}

TEST(ProximalTermTest, KeepsTheModelCloserToTheStart) {
  const Dataset data = Blobs(600, 4);
  const Model start = Model::Create(Architecture::Parse("mlp:4-8-2"), 9);
  for (const auto& [mode, threads] : {std::pair{TrainMode::kSync, 2}, {TrainMode::kHogwild, 2}}) {
    TrainOptions o;
    o.mode = mode;
    o.threads = threads;
    o.batch = 16;
    o.epochs = 3;
    o.sgd.lr = 0.1f;
    o.seed = 11;
    Model plain = start;
    LocalTrainer(o).Train(plain, data);
    o.prox_mu = 1.0f;
    Model prox = start;
    LocalTrainer(o).Train(prox, data);
    const double plain_distance = Distance(plain.params, start.params);
    const double prox_distance = Distance(prox.params, start.params);
    EXPECT_LT(prox_distance, 0.8 * plain_distance) << ToString(mode);
    EXPECT_GT(prox_distance, 0.0) << ToString(mode);
  }
}

TEST(ProximalTermTest, NegativeMuIsRefused) {
  const Dataset data = Blobs(8, 1);
  Model m = Model::Create(Architecture::Parse("softmax:4-2"), 1);
  TrainOptions o;
  o.prox_mu = -1.0f;
  EXPECT_THROW(LocalTrainer(o).Train(m, data), Error);
}

}  // namespace
}  // namespace fedsgd
