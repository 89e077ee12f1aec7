// Architectures, forward/backward and SGD kernels: text forms, layout,
// initialisation, gradients against central finite differences for every
// architecture, loss and activation, scoring, and the SGD step math.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "fedsgd/optimizer.h"

namespace fedsgd {
namespace {

TEST(ModelTest, ParsesAndPrintsEveryForm) {
  for (const char* text : {"linear:13", "logistic:30", "softmax:784-10", "mlp:784-128-10",
                           "mlp:784-128-64-10:tanh", "mlp:4-3-2:sigmoid",
                           "mlp:784-128-10:relu:dropout=0.2"}) {
    const Architecture a = Architecture::Parse(text);
    EXPECT_EQ(a.ToString(), text);
    EXPECT_EQ(Architecture::Parse(a.ToString()), a);
  }
  const Architecture m = Architecture::Parse("mlp:784-128-64-10:tanh");
  EXPECT_EQ(m.widths, (std::vector<int>{784, 128, 64, 10}));
  EXPECT_EQ(m.activation, Activation::kTanh);
  EXPECT_EQ(Architecture::Parse("linear:13").widths, (std::vector<int>{13, 1}));
  EXPECT_EQ(Architecture::Parse("logistic:30").num_classes(), 2);
  EXPECT_EQ(Architecture::Parse("linear:13").loss(), LossKind::kMeanSquaredError);
}

TEST(ModelTest, RefusesBadTextWithAClearMessage) {
  for (const char* text : {"", "mlp", "mlp:", "mlp:784-10", "mlp:784--10", "mlp:784-0-10",
                           "mlp:784-x-10", "cnn:784-10", "softmax:784", "softmax:784-1",
                           "linear:3-4", "mlp:4-3-2:swish", "mlp:4-3-2:dropout=1",
                           "mlp:4-3-2:dropout=abc", "softmax:4-3:tanh", "mlp:-4-3-2"}) {
    try {
      Architecture::Parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid model"), std::string::npos) << e.what();
    }
  }
}

TEST(ModelTest, LayoutAndParameterCount) {
  const Architecture a = Architecture::Parse("mlp:784-128-10");
  EXPECT_EQ(a.ParameterCount(), 101770u);
  const auto layers = a.Layout();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].weight_offset, 0u);
  EXPECT_EQ(layers[0].bias_offset, 784u * 128u);
  EXPECT_EQ(layers[1].weight_offset, 784u * 128u + 128u);
  EXPECT_EQ(layers[1].bias_offset + 10, 101770u);
  EXPECT_EQ(Architecture::Parse("linear:13").ParameterCount(), 14u);
}

TEST(ModelTest, InitialisationIsSeededAndScaled) {
  const Architecture a = Architecture::Parse("mlp:784-128-10");
  const Model m1 = Model::Create(a, 7), m2 = Model::Create(a, 7), m3 = Model::Create(a, 8);
  EXPECT_EQ(m1.params, m2.params);
  EXPECT_NE(m1.params, m3.params);
  // He-normal on the ReLU layer: variance 2 / fan_in.
  double sq = 0;
  for (std::size_t i = 0; i < 784u * 128u; ++i) sq += m1.params[i] * m1.params[i];
  EXPECT_NEAR(sq / (784.0 * 128.0), 2.0 / 784.0, 0.1 * 2.0 / 784.0);
  for (std::size_t i = 784u * 128u; i < 784u * 128u + 128u; ++i) EXPECT_EQ(m1.params[i], 0.0f);
}

// Random inputs and valid targets for `arch`.
void RandomBatch(const Architecture& arch, int n, std::mt19937_64& rng, std::vector<float>& x,
                 std::vector<float>& y) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  x.resize(static_cast<std::size_t>(arch.input_size()) * n);
  for (float& v : x) v = normal(rng);
  y.resize(n);
  for (int j = 0; j < n; ++j) {
    y[j] = arch.num_classes() > 0 ? static_cast<float>(rng() % arch.num_classes()) : normal(rng);
  }
}

class GradientCheck : public ::testing::TestWithParam<const char*> {};

TEST_P(GradientCheck, MatchesCentralFiniteDifferences) {
  const Architecture arch = Architecture::Parse(GetParam());
  Model m = Model::Create(arch, 3);
  std::mt19937_64 rng(11);
  // Move biases off zero so their gradients are exercised in general position.
  std::normal_distribution<float> small(0.0f, 0.1f);
  for (float& p : m.params) p += small(rng);
  const int n = 5;
  std::vector<float> x, y;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, n);
  std::vector<float> grad(arch.ParameterCount());
  // With dropout, the same RNG seed gives the same mask in every pass.
  const bool dropout = arch.dropout > 0;
  auto loss_at = [&](std::vector<float>& p, float* g) {
    std::mt19937_64 mask_rng(99);
    std::vector<float> scratch(arch.ParameterCount());
    return static_cast<double>(ForwardBackward(arch, p.data(), x.data(), y.data(), n,
                                               g ? g : scratch.data(), ws,
                                               dropout ? &mask_rng : nullptr));
  };
  loss_at(m.params, grad.data());
  // Small enough not to cross a ReLU kink, large enough for float rounding.
  const float h = 3e-3f;
  double worst = 0;
  for (std::size_t i = 0; i < m.params.size(); ++i) {
    std::vector<float> p = m.params;
    p[i] += h;
    const double up = loss_at(p, nullptr);
    p[i] -= 2 * h;
    const double down = loss_at(p, nullptr);
    const double numeric = (up - down) / (2.0 * h);
    const double err = std::abs(numeric - grad[i]) / std::max(1e-2, std::abs(numeric) + std::abs(grad[i]));
    worst = std::max(worst, err);
    ASSERT_LT(err, 2e-2) << GetParam() << " parameter " << i << ": analytic " << grad[i]
                         << ", numeric " << numeric;
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(
    EveryArchitecture, GradientCheck,
    ::testing::Values("linear:4", "logistic:4", "softmax:4-3", "mlp:4-5-3", "mlp:4-5-3:tanh",
                      "mlp:4-5-3:sigmoid", "mlp:4-6-5-3", "mlp:4-6-5-3:tanh",
                      "mlp:4-6-5-3:sigmoid", "mlp:4-6-5-3:relu:dropout=0.3",
                      "mlp:4-6-3:tanh:dropout=0.5"),
    [](const ::testing::TestParamInfo<const char*>& param_info) {
      std::string name = param_info.param;
      for (char& c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return name;
    });

TEST(NetworkTest, ScoresAHandComputableSoftmax) {
  // softmax:2-2 with W = I and b = 0: the logits are the inputs.
  const Architecture arch = Architecture::Parse("softmax:2-2");
  const std::vector<float> params = {1, 0, 0, 1, 0, 0};
  const std::vector<float> x = {2, 0, 0, 2, 1, 1};  // three samples
  const std::vector<float> y = {0, 0, 1};
  Workspace ws(arch, 3);
  const BatchScore s = Score(arch, params.data(), x.data(), y.data(), 3, ws);
  // Losses: log(1+e^-2), log(1+e^2), log(2). Correct: first only (ties go to class 0).
  const double expected = std::log1p(std::exp(-2.0)) + std::log1p(std::exp(2.0)) + std::log(2.0);
  EXPECT_NEAR(s.loss_sum, expected, 1e-5);
  EXPECT_EQ(s.correct, 1u);
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
  for (int threads : {1, 3}) {
    const Evaluation e = Evaluate(arch, params.data(), d, threads);
    EXPECT_EQ(e.samples, 1000u);
    EXPECT_NEAR(e.accuracy, 0.75, 1e-12);
    EXPECT_GT(e.loss, 0);
  }
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
  Workspace ws(arch, n);
  std::vector<float> g(arch.ParameterCount());
  SgdOptions o;
  for (int step = 0; step < 200; ++step) {
    ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, g.data(), ws);
    SgdStep(m.params.data(), g.data(), nullptr, g.size(), 0.5f, o);
  }
  EXPECT_EQ(Score(arch, m.params.data(), x.data(), y.data(), n, ws).correct, static_cast<std::size_t>(n));
}

TEST(OptimizerTest, SgdStepMath) {
  SgdOptions o;
  std::vector<float> w = {1, -2, 0}, g = {0.5, 0.5, 1};
  SgdStep(w.data(), g.data(), nullptr, 3, 0.1f, o);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], -2.05f);
  EXPECT_FLOAT_EQ(w[2], -0.1f);

  o.weight_decay = 0.1f;
  o.l1 = 0.2f;
  w = {1, -2, 0};
  SgdStep(w.data(), g.data(), nullptr, 3, 0.1f, o);
  EXPECT_FLOAT_EQ(w[0], 1 - 0.1f * (0.5f + 0.1f * 1 + 0.2f));
  EXPECT_FLOAT_EQ(w[1], -2 - 0.1f * (0.5f - 0.2f - 0.2f));
  EXPECT_FLOAT_EQ(w[2], -0.1f);  // sign(0) = 0

  SgdOptions mom;
  mom.momentum = 0.9f;
  w = {1};
  std::vector<float> v = {0}, g1 = {1};
  SgdStep(w.data(), g1.data(), v.data(), 1, 0.1f, mom);
  SgdStep(w.data(), g1.data(), v.data(), 1, 0.1f, mom);
  EXPECT_FLOAT_EQ(v[0], 1.9f);
  EXPECT_FLOAT_EQ(w[0], 1 - 0.1f - 0.19f);
}

TEST(OptimizerTest, SharedStepEqualsPlainStepOnOneThread) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> w(1001), g(1001);
  for (float& v : w) v = normal(rng);
  for (float& v : g) v = normal(rng);
  for (float momentum : {0.0f, 0.5f}) {
    SgdOptions o;
    o.momentum = momentum;
    o.weight_decay = 0.01f;
    o.l1 = 0.001f;
    std::vector<float> a = w, b = w, va(w.size()), vb(w.size());
    for (int i = 0; i < 3; ++i) {
      SgdStep(a.data(), g.data(), va.data(), a.size(), 0.05f, o);
      SgdStepShared(b.data(), g.data(), vb.data(), b.size(), 0.05f, o);
    }
    for (std::size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-6) << i;
    std::vector<float> snapshot(b.size());
    LoadShared(b.data(), snapshot.data(), b.size());
    EXPECT_EQ(snapshot, b);
  }
}

TEST(OptimizerTest, SharedStepFromManyThreadsIsRaceFree) {
  // Run under TSan in CI: concurrent relaxed-atomic updates are not races.
  std::vector<float> w(4096, 0.0f), g(4096, 1.0f);
  SgdOptions o;
  std::atomic<int> ready{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        ready.fetch_add(1);
        while (ready.load() < 4) std::this_thread::yield();
        std::vector<float> snap(w.size());
        for (int i = 0; i < 200; ++i) {
          LoadShared(w.data(), snap.data(), w.size());
          SgdStepShared(w.data(), g.data(), nullptr, w.size(), 0.001f, o);
        }
      });
    }
  }
  // Hogwild may lose some of the 800 concurrent steps, never invent any.
  for (float v : w) {
    EXPECT_LE(v, -0.001f * 200 + 1e-4f);
    EXPECT_GE(v, -0.001f * 800 - 1e-4f);
  }
}

TEST(LrScheduleTest, EveryKind) {
  EXPECT_DOUBLE_EQ(LrSchedule::Parse("constant").Rate(0.1, 1000), 0.1);
  const LrSchedule step = LrSchedule::Parse("step:10:0.5");
  EXPECT_DOUBLE_EQ(step.Rate(0.1, 9), 0.1);
  EXPECT_DOUBLE_EQ(step.Rate(0.1, 10), 0.05);
  EXPECT_DOUBLE_EQ(step.Rate(0.1, 25), 0.025);
  EXPECT_NEAR(LrSchedule::Parse("exp:0.99").Rate(0.1, 100), 0.1 * std::pow(0.99, 100), 1e-12);
  EXPECT_DOUBLE_EQ(LrSchedule::Parse("inv:0.1").Rate(1.0, 10), 0.5);
  EXPECT_DOUBLE_EQ(LrSchedule::Parse("inv:0.1:2").Rate(1.0, 10), 0.25);
  for (const char* text : {"constant", "step:10:0.5", "exp:0.99", "inv:0.1", "inv:0.1:2"}) {
    EXPECT_EQ(LrSchedule::Parse(LrSchedule::Parse(text).ToString()).ToString(),
              LrSchedule::Parse(text).ToString());
  }
  for (const char* bad : {"", "linear", "step:10", "step:0:0.5", "step:10:1.5", "exp:", "exp:-1",
                          "inv:x", "constant:1", "step:2.5:0.5"}) {
    EXPECT_THROW(LrSchedule::Parse(bad), Error) << bad;
  }
}

}  // namespace
}  // namespace fedsgd
