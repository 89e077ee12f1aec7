// Forward passes and workspaces: dropout's mask and scaling, partial
// batches, scoring on hand-computable cases, stable losses, evaluation over
// a data set with threads, and small learning runs. The gradients are
// checked in network_gradient_test.cpp.
#include "fedsgd/network.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "fedsgd/dataset.h"
#include "fedsgd/model.h"
#include "fedsgd/optimizer.h"
#include "network_reference.h"

namespace fedsgd {
namespace {

using testing::RandomBatch;
using testing::RandomModel;

TEST(NetworkTest, DropoutDropsAtItsRateAndRescalesTheSurvivors) {
  // mlp:1-H-2, every hidden unit outputs 1 and logit 0 is their mean, logit 1
  // is 0: with inverted dropout logit 0 = kept / (H * keep), about 1. For
  // label 1 the loss is softplus(logit 0), which reveals it.
  const int hidden = 20000;
  const float dropout = 0.3f;
  Architecture arch = Architecture::Parse("mlp:1-" + std::to_string(hidden) + "-2");
  arch.dropout = dropout;
  std::vector<float> params(arch.ParameterCount(), 0.0f);
  const auto layers = arch.Layout();
  for (int i = 0; i < hidden; ++i) {
    params[layers[0].weight_offset + i] = 1.0f;  // h_i = relu(1 * x) = 1
    params[layers[1].weight_offset + static_cast<std::size_t>(i) * 2] = 1.0f / hidden;
  }
  const std::vector<float> x = {1.0f}, y = {1.0f};
  Workspace ws(arch, 1);
  std::vector<float> grad(arch.ParameterCount());
  std::mt19937_64 rng(1);
  double sum = 0;
  const int trials = 20;
  for (int t = 0; t < trials; ++t) {
    const double loss =
        ForwardBackward(arch, params.data(), x.data(), y.data(), 1, grad.data(), ws, &rng);
    const double logit = std::log(std::expm1(loss));  // softplus^-1
    // Survivors are scaled by 1 / keep, so the kept fraction is logit * keep.
    EXPECT_NEAR(logit * (1 - dropout), 1 - dropout, 0.02);
    sum += logit;
    // Dropped units get no gradient: each W2 entry's gradient is either 0 or
    // the survivor value.
    int dropped = 0;
    for (int i = 0; i < hidden; ++i) {
      dropped += grad[layers[1].weight_offset + static_cast<std::size_t>(i) * 2] == 0.0f;
    }
    EXPECT_NEAR(static_cast<double>(dropped) / hidden, dropout, 0.02);
  }
  EXPECT_NEAR(sum / trials, 1.0, 0.01);  // unbiased: the expectation is unchanged
  // Without an RNG there is no dropout.
  const double loss = ForwardBackward(arch, params.data(), x.data(), y.data(), 1, grad.data(), ws);
  EXPECT_NEAR(loss, std::log1p(std::exp(1.0)), 1e-5);
}

TEST(NetworkTest, WithoutAnRngDropoutModelsMatchTheirPlainTwin) {
  const Architecture plain = Architecture::Parse("mlp:6-5-3:tanh");
  const Architecture dropout = Architecture::Parse("mlp:6-5-3:tanh:dropout=0.5");
  const Model m = RandomModel(plain, 4);
  std::mt19937_64 rng(2);
  std::vector<float> x, y;
  RandomBatch(plain, 8, rng, x, y);
  Workspace ws_plain(plain, 8), ws_dropout(dropout, 8);
  std::vector<float> g1(plain.ParameterCount()), g2(plain.ParameterCount());
  EXPECT_EQ(
      ForwardBackward(plain, m.params.data(), x.data(), y.data(), 8, g1.data(), ws_plain),
      ForwardBackward(dropout, m.params.data(), x.data(), y.data(), 8, g2.data(), ws_dropout));
  EXPECT_EQ(g1, g2);
  const BatchScore s1 = Score(plain, m.params.data(), x.data(), y.data(), 8, ws_plain);
  const BatchScore s2 = Score(dropout, m.params.data(), x.data(), y.data(), 8, ws_dropout);
  EXPECT_EQ(s1.loss_sum, s2.loss_sum);
  EXPECT_EQ(s1.correct, s2.correct);
}

TEST(NetworkTest, AWorkspaceServesAnyBatchUpToItsSize) {
  const Architecture arch = Architecture::Parse("mlp:30-20-4");
  const Model m = RandomModel(arch, 6);
  std::mt19937_64 rng(3);
  std::vector<float> x, y;
  RandomBatch(arch, 40, rng, x, y);
  Workspace shared(arch, 40);
  for (int n : {40, 7, 1, 33, 40}) {
    Workspace fresh(arch, n);
    std::vector<float> g1(arch.ParameterCount()), g2(arch.ParameterCount());
    const float l1 =
        ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, g1.data(), shared);
    const float l2 =
        ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, g2.data(), fresh);
    EXPECT_NEAR(l1, l2, 1e-6) << n;
    for (std::size_t i = 0; i < g1.size(); ++i) ASSERT_NEAR(g1[i], g2[i], 1e-6) << n;
    EXPECT_NEAR(Score(arch, m.params.data(), x.data(), y.data(), n, shared).loss_sum / n, l1, 1e-5);
  }
}

TEST(NetworkTest, ScoresHandComputableCases) {
  {
    // softmax:2-2 with W = I and b = 0: the logits are the inputs.
    const Architecture arch = Architecture::Parse("softmax:2-2");
    const std::vector<float> params = {1, 0, 0, 1, 0, 0};
    const std::vector<float> x = {2, 0, 0, 2, 1, 1};  // three samples
    const std::vector<float> y = {0, 0, 1};
    Workspace ws(arch, 3);
    const BatchScore s = Score(arch, params.data(), x.data(), y.data(), 3, ws);
    // log(1+e^-2), log(1+e^2), log 2. Correct: the first only (a tie goes to
    // class 0, the label is 1).
    EXPECT_NEAR(s.loss_sum, std::log1p(std::exp(-2.0)) + std::log1p(std::exp(2.0)) + std::log(2.0),
                1e-5);
    EXPECT_EQ(s.correct, 1u);
  }
  {
    // mlp:1-1-2 (ReLU), W1 = 1, W2 = (1, -1)^T: x = 2 -> logits (2, -2);
    // x = -1 -> hidden 0 -> logits (0, 0).
    const Architecture arch = Architecture::Parse("mlp:1-1-2");
    const std::vector<float> params = {1, 0, 1, -1, 0, 0};
    const std::vector<float> x = {2, -1}, y = {0, 1};
    Workspace ws(arch, 2);
    const BatchScore s = Score(arch, params.data(), x.data(), y.data(), 2, ws);
    EXPECT_NEAR(s.loss_sum, std::log1p(std::exp(-4.0)) + std::log(2.0), 1e-6);
    EXPECT_EQ(s.correct, 1u);
    std::vector<float> g(arch.ParameterCount());
    EXPECT_NEAR(ForwardBackward(arch, params.data(), x.data(), y.data(), 2, g.data(), ws),
                s.loss_sum / 2, 1e-6);
  }
  {
    // linear:1, w = 2, b = 1: predictions 3 and 5 for targets 3 and 4.
    const Architecture arch = Architecture::Parse("linear:1");
    const std::vector<float> params = {2, 1};
    const std::vector<float> x = {1, 2}, y = {3, 4};
    Workspace ws(arch, 2);
    const BatchScore s = Score(arch, params.data(), x.data(), y.data(), 2, ws);
    EXPECT_NEAR(s.loss_sum, 0.5, 1e-6);  // 0.5 * (0^2 + 1^2)
    EXPECT_EQ(s.correct, 0u);            // regression counts nothing correct
    std::vector<float> g(2);
    EXPECT_NEAR(ForwardBackward(arch, params.data(), x.data(), y.data(), 2, g.data(), ws), 0.25,
                1e-6);
    EXPECT_NEAR(g[0], (0 * 1 + 1 * 2) / 2.0, 1e-6);  // mean (o - y) x
    EXPECT_NEAR(g[1], (0 + 1) / 2.0, 1e-6);          // mean (o - y)
  }
  {
    // logistic:1 with w = 1, b = 0 at z = 0: p = 0.5 counts as class 1.
    const Architecture arch = Architecture::Parse("logistic:1");
    const std::vector<float> params = {1, 0};
    const std::vector<float> x = {0, 0, 2}, y = {1, 0, 0};
    Workspace ws(arch, 3);
    const BatchScore s = Score(arch, params.data(), x.data(), y.data(), 3, ws);
    EXPECT_NEAR(s.loss_sum, 2 * std::log(2.0) + std::log1p(std::exp(2.0)), 1e-6);
    EXPECT_EQ(s.correct, 1u);
  }
}

TEST(NetworkTest, LossesAreStableForHugeLogits) {
  // softplus and log-sum-exp must not overflow to inf or lose the loss.
  const Architecture soft = Architecture::Parse("softmax:1-2");
  const std::vector<float> sp = {1000, -1000, 0, 0};
  const std::vector<float> x = {1}, y0 = {0}, y1 = {1};
  Workspace ws(soft, 1);
  std::vector<float> g(soft.ParameterCount());
  EXPECT_NEAR(ForwardBackward(soft, sp.data(), x.data(), y0.data(), 1, g.data(), ws), 0.0, 1e-6);
  EXPECT_NEAR(ForwardBackward(soft, sp.data(), x.data(), y1.data(), 1, g.data(), ws), 2000.0, 1e-2);
  for (float v : g) EXPECT_TRUE(std::isfinite(v));

  const Architecture log = Architecture::Parse("logistic:1");
  const std::vector<float> lp = {1000, 0};
  Workspace lws(log, 1);
  std::vector<float> lg(2);
  EXPECT_NEAR(ForwardBackward(log, lp.data(), x.data(), y1.data(), 1, lg.data(), lws), 0.0, 1e-6);
  EXPECT_NEAR(ForwardBackward(log, lp.data(), x.data(), y0.data(), 1, lg.data(), lws), 1000.0,
              1e-2);
  EXPECT_NEAR(lg[1], 1.0, 1e-6);  // d/dz = sigmoid(z) - y
}

TEST(NetworkTest, EvaluateOverADatasetWithThreads) {
  const Architecture arch = Architecture::Parse("logistic:1");
  const std::vector<float> params = {1, 0};  // p = sigmoid(x)
  Dataset d;
  d.num_features = 1;
  d.num_classes = 2;
  for (int i = 0; i < 1000; ++i) {
    d.x.push_back(i % 2 ? 3.0f : -3.0f);
    d.y.push_back(i % 4 == 3 ? 0.0f : static_cast<float>(i % 2));  // every 4th odd one wrong
  }
  // Loss: 750 samples at softplus(-3), 250 at softplus(3).
  const double loss = (750 * std::log1p(std::exp(-3.0)) + 250 * std::log1p(std::exp(3.0))) / 1000;
  for (int threads : {1, 3, 64}) {
    const Evaluation e = Evaluate(arch, params.data(), d, threads);
    EXPECT_EQ(e.samples, 1000u);
    EXPECT_NEAR(e.accuracy, 0.75, 1e-12);
    EXPECT_NEAR(e.loss, loss, 1e-6);
  }
  const Evaluation empty = Evaluate(arch, params.data(), Dataset{}, 2);
  EXPECT_EQ(empty.samples, 0u);
}

TEST(NetworkTest, SoftmaxRegressionLearnsSeparableData) {
  const Architecture arch = Architecture::Parse("softmax:2-3");
  Model m = Model::Create(arch, 1);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> noise(0.0f, 0.3f);
  const int n = 300;
  std::vector<float> x, y;
  const float centres[3][2] = {{3, 0}, {-3, 3}, {-3, -3}};
  for (int i = 0; i < n; ++i) {
    const int c = i % 3;
    x.push_back(centres[c][0] + noise(rng));
    x.push_back(centres[c][1] + noise(rng));
    y.push_back(static_cast<float>(c));
  }
  // Mini-batches of 30, plain SgdStep.
  const int batch = 30;
  Workspace ws(arch, n);
  std::vector<float> g(arch.ParameterCount());
  SgdOptions o;
  float first = 0, last = 0;
  for (int epoch = 0; epoch < 20; ++epoch) {
    for (int b = 0; b < n; b += batch) {
      last = ForwardBackward(arch, m.params.data(), x.data() + 2 * b, y.data() + b, batch, g.data(),
                             ws);
      if (epoch == 0 && b == 0) first = last;
      SgdStep(m.params.data(), g.data(), nullptr, g.size(), 0.5f, o);
    }
  }
  EXPECT_LT(last, 0.1f * first);
  EXPECT_EQ(Score(arch, m.params.data(), x.data(), y.data(), n, ws).correct,
            static_cast<std::size_t>(n));
}

TEST(NetworkTest, MlpLearnsXor) {
  // Not linearly separable: needs the hidden layer and its backward pass.
  const Architecture arch = Architecture::Parse("mlp:2-8-2:tanh");
  Model m = Model::Create(arch, 2);
  const std::vector<float> x = {0, 0, 0, 1, 1, 0, 1, 1}, y = {0, 1, 1, 0};
  Workspace ws(arch, 4);
  std::vector<float> g(arch.ParameterCount()), v(arch.ParameterCount());
  SgdOptions o;
  o.momentum = 0.9f;
  for (int step = 0; step < 500; ++step) {
    ForwardBackward(arch, m.params.data(), x.data(), y.data(), 4, g.data(), ws);
    SgdStep(m.params.data(), g.data(), v.data(), g.size(), 0.1f, o);
  }
  const BatchScore s = Score(arch, m.params.data(), x.data(), y.data(), 4, ws);
  EXPECT_EQ(s.correct, 4u);
  EXPECT_LT(s.loss_sum / 4, 0.05);
}

}  // namespace
}  // namespace fedsgd
