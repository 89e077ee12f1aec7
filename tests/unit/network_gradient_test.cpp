// Forward/backward gradients for every architecture, loss and activation
// against central finite differences of an independent double-precision
// reference (network_reference.h), with dropout, class weights and logit
// offsets; the gradient check's own sharpness.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "network_reference.h"

namespace fedsgd {
namespace {

using testing::NumericGradient;
using testing::RandomBatch;
using testing::RandomModel;
using testing::ReferenceLoss;

struct GradientCase {
  const char* arch;
  int n;          // samples in the batch
  int max_batch;  // Workspace size; larger than n tests partial batches
};

void PrintTo(const GradientCase& c, std::ostream* os) {
  *os << c.arch << " n=" << c.n << " max_batch=" << c.max_batch;
}

class NetworkGradientTest : public ::testing::TestWithParam<GradientCase> {};

// Every parameter's analytic gradient (float, Eigen) against the central
// difference of the double reference. The reference's error is ~1e-10, so
// the tolerance (1e-5 absolute + 1e-4 relative) only has to cover float
// rounding in the kernels, and a wrong factor, sign, transpose or index on a
// single parameter, however small its gradient, fails.
TEST_P(NetworkGradientTest, MatchesFiniteDifferencesOfADoubleReference) {
  const GradientCase c = GetParam();
  const Architecture arch = Architecture::Parse(c.arch);
  const Model m = RandomModel(arch, 3);
  std::mt19937_64 rng(11);
  std::vector<float> x, y;
  RandomBatch(arch, c.n, rng, x, y);
  Workspace ws(arch, c.max_batch);
  std::vector<float> grad(arch.ParameterCount(), 123.0f);  // must be overwritten
  const float loss =
      ForwardBackward(arch, m.params.data(), x.data(), y.data(), c.n, grad.data(), ws);

  std::vector<double> p(m.params.begin(), m.params.end());
  const double reference = ReferenceLoss(arch, p, x, y, c.n);
  EXPECT_NEAR(loss, reference, 1e-5 * (1 + std::abs(reference)));

  const double h = 1e-5;
  double worst = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double numeric = NumericGradient(arch, p, i, h, x, y, c.n);
    const double err = std::abs(grad[i] - numeric);
    worst = std::max(worst, err / (1e-5 + 1e-4 * std::abs(numeric)));
    ASSERT_LE(err, 1e-5 + 1e-4 * std::abs(numeric))
        << c.arch << " parameter " << i << " of " << p.size() << ": analytic " << grad[i]
        << ", numeric " << numeric;
  }
  RecordProperty("worst_error_over_tolerance", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(
    Network, NetworkGradientTest,
    ::testing::Values(
        GradientCase{"linear:4", 5, 5}, GradientCase{"logistic:4", 5, 5},
        GradientCase{"softmax:4-3", 5, 5}, GradientCase{"mlp:4-5-3", 5, 5},
        GradientCase{"mlp:4-5-3:tanh", 5, 5}, GradientCase{"mlp:4-5-3:sigmoid", 5, 5},
        GradientCase{"mlp:4-6-5-3", 5, 5}, GradientCase{"mlp:4-6-5-3:tanh", 5, 5},
        GradientCase{"mlp:4-6-5-3:sigmoid", 5, 5}, GradientCase{"mlp:5-7-6-4-3", 7, 7},
        // A partial batch in a larger Workspace, one sample,
        // and sizes that are not multiples of a vector width.
        GradientCase{"mlp:4-6-5-3:tanh", 3, 16}, GradientCase{"mlp:4-5-3", 1, 8},
        GradientCase{"logistic:9", 1, 1}, GradientCase{"linear:7", 13, 32},
        // Products large enough for several GEMM blocks.
        GradientCase{"mlp:37-29-11:tanh", 19, 33}, GradientCase{"softmax:70-13", 17, 17},
        // Convolutional nets: pooling, stride, padding, a
        // multi-channel input, pooling first, no hidden dense
        // layer, and more samples than one im2col chunk (32).
        GradientCase{"cnn:1x6x6-c2k3-p2-f4-3", 5, 5},
        GradientCase{"cnn:3x7x7-c4k3s2p1-c3k2-p2-3", 4, 6},
        GradientCase{"cnn:2x9x8-c3k3p1-p2-c4k3s2-f6-5", 3, 3},
        GradientCase{"cnn:2x6x5-p2-c3k2-4", 4, 4},
        GradientCase{"cnn:2x5x5-c3k3p2-c2k2s3-f3-3", 2, 2},
        GradientCase{"cnn:1x5x5-c2k3-p3-3", 37, 40}, GradientCase{"cnn:2x6x5-c3k2-f5-f4-3", 6, 6}),
    [](const ::testing::TestParamInfo<GradientCase>& param_info) {
      std::string name = std::string(param_info.param.arch) + "_n" +
                         std::to_string(param_info.param.n) + "_of" +
                         std::to_string(param_info.param.max_batch);
      for (char& c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return name;
    });

// ForwardBackward's loss, and its gradient on the parameters `pick` chooses,
// against the double reference for a model at batch n (seeded model and
// batch; pick may draw from the batch's generator).
void ExpectGradientOnSampledParameters(
    const char* model, int n, int max_batch,
    const std::function<std::vector<std::size_t>(const Architecture&, std::mt19937_64&)>& pick) {
  const Architecture arch = Architecture::Parse(model);
  const Model m = RandomModel(arch, 5);
  std::mt19937_64 rng(7);
  std::vector<float> x, y;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, max_batch);
  std::vector<float> grad(arch.ParameterCount());
  const float loss = ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, grad.data(), ws);
  std::vector<double> p(m.params.begin(), m.params.end());
  EXPECT_NEAR(loss, ReferenceLoss(arch, p, x, y, n), 1e-4);
  const double h = 1e-4;
  for (std::size_t i : pick(arch, rng)) {
    const double numeric = NumericGradient(arch, p, i, h, x, y, n);
    EXPECT_NEAR(grad[i], numeric, 1e-5 + 1e-3 * std::abs(numeric)) << "parameter " << i;
  }
}

// The production shape at its production batch, on a sample of parameters
// from every block (W1, b1, W2, b2): the GEMM paths with real blocking.
TEST(NetworkTest, GradientOfTheMnistMlpOnSampledParameters) {
  ExpectGradientOnSampledParameters("mlp:784-128-10", 32, 64,
                                    [](const Architecture& arch, std::mt19937_64& rng) {
                                      const auto layers = arch.Layout();
                                      std::vector<std::size_t> picks = {0,
                                                                        layers[0].bias_offset - 1,
                                                                        layers[0].bias_offset,
                                                                        layers[1].weight_offset,
                                                                        layers[1].bias_offset,
                                                                        arch.ParameterCount() - 1};
                                      for (int i = 0; i < 40; ++i)
                                        picks.push_back(rng() % arch.ParameterCount());
                                      return picks;
                                    });
}

// The production cnn at batch 34 (two im2col chunks, real GEMM blocking)
// on a sample of parameters from every block.
TEST(NetworkTest, GradientOfTheMnistCnnOnSampledParameters) {
  ExpectGradientOnSampledParameters("cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10", 34, 40,
                                    [](const Architecture& arch, std::mt19937_64& rng) {
                                      std::vector<std::size_t> picks;
                                      for (const LayerLayout& l : arch.Layout()) {
                                        picks.push_back(l.weight_offset);
                                        picks.push_back(l.bias_offset - 1);
                                        picks.push_back(l.bias_offset);
                                        picks.push_back(l.bias_offset + l.out - 1);
                                      }
                                      for (int i = 0; i < 8; ++i)
                                        picks.push_back(rng() % arch.Layout()[1].bias_offset);
                                      return picks;
                                    });
}

// The check is sharp: a 0.02% error in the gradient of one convolution
// weight (the one with the largest gradient) fails it, for a conv layer
// deep in the net and for the first one.
TEST(NetworkTest, CnnGradientCheckCatchesOneWrongConvolutionWeight) {
  const Architecture arch = Architecture::Parse("cnn:3x7x7-c4k3s2p1-c3k2-p2-f4-3");
  const Model m = RandomModel(arch, 3);
  std::mt19937_64 rng(11);
  std::vector<float> x, y;
  const int n = 6;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, n);
  std::vector<float> grad(arch.ParameterCount());
  ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, grad.data(), ws);
  std::vector<double> p(m.params.begin(), m.params.end());
  // Worst |analytic - numeric| over the tolerance used above, on [begin, end).
  auto worst = [&](const std::vector<float>& g, std::size_t begin, std::size_t end) {
    const double h = 1e-5;
    double w = 0;
    for (std::size_t i = begin; i < end; ++i) {
      const double numeric = NumericGradient(arch, p, i, h, x, y, n);
      w = std::max(w, std::abs(g[i] - numeric) / (1e-5 + 1e-4 * std::abs(numeric)));
    }
    return w;
  };
  for (const LayerLayout& l : {arch.Layout()[0], arch.Layout()[1]}) {
    const std::size_t begin = l.weight_offset, end = l.bias_offset;
    EXPECT_LE(worst(grad, begin, end), 1.0);
    std::size_t big = begin;
    for (std::size_t i = begin; i < end; ++i) {
      if (std::abs(grad[i]) > std::abs(grad[big])) big = i;
    }
    ASSERT_GT(std::abs(grad[big]), 0.1f) << "too small a gradient to test at 0.02%";
    std::vector<float> wrong = grad;
    wrong[big] *= 1.0002f;
    EXPECT_GT(worst(wrong, begin, end), 1.0) << "parameter " << big;
  }
}

// Score, Predict and ForwardBackward agree for a cnn, at any batch.
TEST(NetworkTest, CnnScoreAndPredictMatchTheTrainingPass) {
  const Architecture arch = Architecture::Parse("cnn:2x8x8-c3k3p1-p2-c4k3-f5-3");
  const Model m = RandomModel(arch, 8);
  std::mt19937_64 rng(12);
  std::vector<float> x, y;
  const int n = 9;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, 16);
  std::vector<float> grad(arch.ParameterCount()), probs(static_cast<std::size_t>(3) * n);
  const float loss = ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, grad.data(), ws);
  const BatchScore s = Score(arch, m.params.data(), x.data(), y.data(), n, ws);
  EXPECT_NEAR(s.loss_sum / n, loss, 1e-6);
  Predict(arch, m.params.data(), x.data(), n, probs.data(), ws);
  double loss_from_probs = 0;
  std::size_t correct = 0;
  for (int j = 0; j < n; ++j) {
    const float* pj = probs.data() + static_cast<std::ptrdiff_t>(3) * j;
    EXPECT_NEAR(pj[0] + pj[1] + pj[2], 1.0, 1e-6);
    loss_from_probs -= std::log(pj[static_cast<int>(y[j])]);
    correct += std::max_element(pj, pj + 3) - pj == static_cast<int>(y[j]);
  }
  EXPECT_NEAR(loss_from_probs / n, loss, 1e-5);
  EXPECT_EQ(correct, s.correct);
  std::vector<double> p(m.params.begin(), m.params.end());
  EXPECT_NEAR(loss, ReferenceLoss(arch, p, x, y, n), 1e-5);
}

// With dropout the loss depends on the mask; the same RNG seed gives the same
// mask in every pass, so finite differences of the float loss check the
// masked backward pass. Float differences are coarser than the double
// reference above, hence a looser bound; h = 1e-3 is still small enough not
// to step across a ReLU's kink (3e-3 did, for one of a cnn's convolution
// weights: the gradient was right, the difference quotient not).
class NetworkDropoutGradientTest : public ::testing::TestWithParam<const char*> {};

TEST_P(NetworkDropoutGradientTest, MatchesFiniteDifferencesWithAFixedMask) {
  const Architecture arch = Architecture::Parse(GetParam());
  const Model m = RandomModel(arch, 3);
  std::mt19937_64 rng(11);
  const int n = 6;
  std::vector<float> x, y;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, n);
  std::vector<float> grad(arch.ParameterCount()), scratch(arch.ParameterCount());
  auto loss_at = [&](const std::vector<float>& params, float* g) {
    std::mt19937_64 mask_rng(99);
    return static_cast<double>(
        ForwardBackward(arch, params.data(), x.data(), y.data(), n, g, ws, &mask_rng));
  };
  loss_at(m.params, grad.data());
  const float h = 1e-3f;
  int nonzero = 0;
  for (std::size_t i = 0; i < m.params.size(); ++i) {
    std::vector<float> p = m.params;
    p[i] += h;
    const double up = loss_at(p, scratch.data());
    p[i] = m.params[i] - h;
    const double down = loss_at(p, scratch.data());
    const double numeric = (up - down) / (2.0 * static_cast<double>(h));
    ASSERT_NEAR(grad[i], numeric, 2e-4 + 1e-2 * std::abs(numeric))
        << GetParam() << " parameter " << i;
    nonzero += grad[i] != 0.0f;
  }
  EXPECT_GT(nonzero, 0);
  // The mask changes the loss: dropout is really applied.
  std::vector<float> plain(arch.ParameterCount());
  const float without =
      ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, plain.data(), ws);
  EXPECT_NE(without, static_cast<float>(loss_at(m.params, scratch.data())));
}

INSTANTIATE_TEST_SUITE_P(Network, NetworkDropoutGradientTest,
                         ::testing::Values("mlp:4-6-5-3:relu:dropout=0.3",
                                           "mlp:4-6-3:tanh:dropout=0.5",
                                           "mlp:4-8-3:sigmoid:dropout=0.2",
                                           // a cnn's fN layers (the convolutions keep
                                           // every unit)
                                           "cnn:1x6x6-c2k3-p2-f6-3:dropout=0.3",
                                           "cnn:2x6x5-c3k2-f5-f4-3:dropout=0.5"),
                         [](const ::testing::TestParamInfo<const char*>& param_info) {
                           std::string name = param_info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

// Class weights scale each sample's cross-entropy: loss and every gradient
// entry against finite differences of the weighted double reference, for a
// softmax and an MLP, with a class weighted 0 and one weighted far above 1.
TEST(NetworkTest, ClassWeightsMatchFiniteDifferencesOfTheWeightedReference) {
  for (const char* name : {"softmax:4-3", "mlp:4-5-3:tanh"}) {
    const Architecture arch = Architecture::Parse(name);
    const Model m = RandomModel(arch, 4);
    std::mt19937_64 rng(12);
    std::vector<float> x, y;
    RandomBatch(arch, 9, rng, x, y);
    const std::vector<float> weights = {0.25f, 2.5f, 0.0f};
    const std::vector<double> weights_double(weights.begin(), weights.end());
    Workspace ws(arch, 9);
    std::vector<float> grad(arch.ParameterCount());
    const float loss = ForwardBackward(arch, m.params.data(), x.data(), y.data(), 9, grad.data(),
                                       ws, nullptr, nullptr, weights.data());
    std::vector<double> p(m.params.begin(), m.params.end());
    const double reference = ReferenceLoss(arch, p, x, y, 9, &weights_double);
    EXPECT_NEAR(loss, reference, 1e-5 * (1 + std::abs(reference))) << name;
    EXPECT_GT(std::abs(reference - ReferenceLoss(arch, p, x, y, 9)), 1e-3) << name;
    const double h = 1e-5;
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double numeric = NumericGradient(arch, p, i, h, x, y, 9, &weights_double);
      ASSERT_NEAR(grad[i], numeric, 1e-5 + 1e-4 * std::abs(numeric)) << name << " parameter " << i;
    }
  }
  // Other losses ignore the weights.
  const Architecture linear = Architecture::Parse("linear:4");
  const Model m = RandomModel(linear, 4);
  std::mt19937_64 rng(5);
  std::vector<float> x, y;
  RandomBatch(linear, 6, rng, x, y);
  Workspace ws(linear, 6);
  std::vector<float> g1(linear.ParameterCount()), g2(linear.ParameterCount());
  const float w[1] = {3.0f};
  EXPECT_EQ(ForwardBackward(linear, m.params.data(), x.data(), y.data(), 6, g1.data(), ws),
            ForwardBackward(linear, m.params.data(), x.data(), y.data(), 6, g2.data(), ws, nullptr,
                            nullptr, w));
  EXPECT_EQ(g1, g2);
}

// Logit adjustment adds its offsets to the logits: the same loss and
// gradient as a model whose output biases are shifted by them.
TEST(NetworkTest, LogitOffsetsActLikeShiftedOutputBiases) {
  const Architecture arch = Architecture::Parse("mlp:6-5-3:tanh");
  const Model m = RandomModel(arch, 5);
  std::mt19937_64 rng(3);
  std::vector<float> x, y;
  RandomBatch(arch, 8, rng, x, y);
  const std::vector<float> offsets = {-0.5f, 0.0f, -7.0f};
  Model shifted = m;
  const LayerLayout last = arch.Layout().back();
  for (std::size_t c = 0; c < offsets.size(); ++c)
    shifted.params[last.bias_offset + c] += offsets[c];
  Workspace ws(arch, 8);
  std::vector<float> g_offsets(arch.ParameterCount()), g_shifted(arch.ParameterCount()),
      g_plain(arch.ParameterCount());
  const float with_offsets = ForwardBackward(arch, m.params.data(), x.data(), y.data(), 8,
                                             g_offsets.data(), ws, nullptr, offsets.data());
  const float with_shift =
      ForwardBackward(arch, shifted.params.data(), x.data(), y.data(), 8, g_shifted.data(), ws);
  const float plain =
      ForwardBackward(arch, m.params.data(), x.data(), y.data(), 8, g_plain.data(), ws);
  EXPECT_NEAR(with_offsets, with_shift, 1e-5);
  EXPECT_GT(std::abs(with_offsets - plain), 1e-3);  // the offsets do change the loss
  for (std::size_t i = 0; i < g_offsets.size(); ++i) EXPECT_NEAR(g_offsets[i], g_shifted[i], 1e-5);
  // Score (evaluation) never adjusts: the plain logits are the model's answer.
  const BatchScore s = Score(arch, m.params.data(), x.data(), y.data(), 8, ws);
  EXPECT_NEAR(s.loss_sum / 8, plain, 1e-5);
}

}  // namespace
}  // namespace fedsgd
