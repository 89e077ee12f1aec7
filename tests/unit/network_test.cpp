// Forward/backward passes: gradients for every architecture, loss and
// activation against central finite differences of an independent
// double-precision reference (per-sample loops straight from the
// definitions), dropout, partial batches, scoring and evaluation on
// hand-computable cases, and small learning runs.
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

namespace fedsgd {
namespace {

// A cnn's mean loss in double, one sample at a time: direct convolution and
// pooling over [channel][row][column] maps, the parameters indexed as
// model.h documents them (shares no code with network.cpp's im2col).
double ReferenceCnnLoss(const Architecture& arch, const std::vector<double>& p,
                        const std::vector<float>& x, const std::vector<float>& y, int n,
                        const std::vector<double>* class_weights) {
  const std::vector<LayerLayout> layers = arch.Layout();
  double total = 0;
  for (int j = 0; j < n; ++j) {
    int channels = arch.input_shape.channels, height = arch.input_shape.height,
        width = arch.input_shape.width;
    std::vector<double> map(x.begin() + static_cast<std::ptrdiff_t>(j) * arch.input_size(),
                            x.begin() + static_cast<std::ptrdiff_t>(j + 1) * arch.input_size());
    auto at = [&](const std::vector<double>& m, int c, int r, int col) {
      return m[(static_cast<std::size_t>(c) * height + r) * width + col];
    };
    std::size_t layer = 0;
    for (const FeatureStage& s : arch.stages) {
      const int k = s.kernel;
      if (s.type == FeatureStage::Type::kMaxPool) {
        const int oh = height / k, ow = width / k;
        std::vector<double> out(static_cast<std::size_t>(channels) * oh * ow);
        for (int c = 0; c < channels; ++c) {
          for (int r = 0; r < oh; ++r) {
            for (int col = 0; col < ow; ++col) {
              double m = -INFINITY;
              for (int i = 0; i < k; ++i) {
                for (int jj = 0; jj < k; ++jj) m = std::max(m, at(map, c, r * k + i, col * k + jj));
              }
              out[(static_cast<std::size_t>(c) * oh + r) * ow + col] = m;
            }
          }
        }
        map = out;
        height = oh;
        width = ow;
        continue;
      }
      const LayerLayout& L = layers[layer++];
      const int oc = s.channels;
      const int oh = (height + 2 * s.padding - k) / s.stride + 1;
      const int ow = (width + 2 * s.padding - k) / s.stride + 1;
      std::vector<double> out(static_cast<std::size_t>(oc) * oh * ow);
      for (int o = 0; o < oc; ++o) {
        for (int r = 0; r < oh; ++r) {
          for (int col = 0; col < ow; ++col) {
            double v = p[L.bias_offset + o];
            for (int c = 0; c < channels; ++c) {
              for (int i = 0; i < k; ++i) {
                for (int jj = 0; jj < k; ++jj) {
                  const int ir = r * s.stride - s.padding + i;
                  const int ic = col * s.stride - s.padding + jj;
                  if (ir < 0 || ir >= height || ic < 0 || ic >= width) continue;
                  const std::size_t w =
                      L.weight_offset + o +
                      static_cast<std::size_t>(oc) * (c + channels * (jj + k * i));
                  v += p[w] * at(map, c, ir, ic);
                }
              }
            }
            out[(static_cast<std::size_t>(o) * oh + r) * ow + col] = v > 0 ? v : 0;
          }
        }
      }
      map = out;
      channels = oc;
      height = oh;
      width = ow;
    }
    // Flattened (row, column, channel), channel fastest.
    std::vector<double> a(map.size());
    for (int c = 0; c < channels; ++c) {
      for (int r = 0; r < height; ++r) {
        for (int col = 0; col < width; ++col) {
          a[c + static_cast<std::size_t>(channels) * (col + static_cast<std::size_t>(width) * r)] =
              at(map, c, r, col);
        }
      }
    }
    for (std::size_t l = layer; l < layers.size(); ++l) {
      const LayerLayout& L = layers[l];
      std::vector<double> z(L.out);
      for (int o = 0; o < L.out; ++o) {
        z[o] = p[L.bias_offset + o];
        for (int i = 0; i < L.in; ++i)
          z[o] += p[L.weight_offset + o + static_cast<std::size_t>(i) * L.out] * a[i];
        if (l + 1 < layers.size()) z[o] = z[o] > 0 ? z[o] : 0;
      }
      a = z;
    }
    double sum = 0;
    for (double v : a) sum += std::exp(v);
    const auto label = static_cast<std::size_t>(y[j]);
    total += (class_weights ? (*class_weights)[label] : 1.0) * (std::log(sum) - a[label]);
  }
  return total / n;
}

// The mean loss of params over n samples, in double, one sample at a time:
// shares no code with network.cpp, so the two cannot be wrong the same way.
// class_weights (cross-entropy only) multiply each sample's loss by its
// class's weight.
double ReferenceLoss(const Architecture& arch, const std::vector<double>& p,
                     const std::vector<float>& x, const std::vector<float>& y, int n,
                     const std::vector<double>* class_weights = nullptr) {
  if (arch.kind == ModelKind::kCnn) return ReferenceCnnLoss(arch, p, x, y, n, class_weights);
  const std::vector<LayerLayout> layers = arch.Layout();
  double total = 0;
  for (int j = 0; j < n; ++j) {
    std::vector<double> a(x.begin() + static_cast<std::ptrdiff_t>(j) * arch.input_size(),
                          x.begin() + static_cast<std::ptrdiff_t>(j + 1) * arch.input_size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const LayerLayout& L = layers[l];
      std::vector<double> z(L.out);
      for (int o = 0; o < L.out; ++o) {
        z[o] = p[L.bias_offset + o];
        for (int i = 0; i < L.in; ++i)
          z[o] += p[L.weight_offset + o + static_cast<std::size_t>(i) * L.out] * a[i];
      }
      if (arch.kind == ModelKind::kMlp && l + 1 < layers.size()) {
        for (double& v : z) {
          switch (arch.activation) {
            case Activation::kRelu:
              v = v > 0 ? v : 0;
              break;
            case Activation::kTanh:
              v = std::tanh(v);
              break;
            case Activation::kSigmoid:
              v = 1 / (1 + std::exp(-v));
              break;
          }
        }
      }
      a = z;
    }
    switch (arch.loss()) {
      case LossKind::kMeanSquaredError:
        total += 0.5 * (a[0] - y[j]) * (a[0] - y[j]);
        break;
      case LossKind::kBinaryCrossEntropy: {
        const double s = 1 / (1 + std::exp(-a[0]));
        total += -y[j] * std::log(s) - (1 - y[j]) * std::log(1 - s);
        break;
      }
      case LossKind::kCrossEntropy: {
        double sum = 0;
        for (double v : a) sum += std::exp(v);
        const auto label = static_cast<std::size_t>(y[j]);
        total += (class_weights ? (*class_weights)[label] : 1.0) * (std::log(sum) - a[label]);
        break;
      }
    }
  }
  return total / n;
}

// Random inputs and valid targets for arch (logistic targets 0 or 1).
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

// A model with every parameter (biases included) in general position.
Model RandomModel(const Architecture& arch, std::uint64_t seed) {
  Model m = Model::Create(arch, seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<float> small(0.0f, 0.1f);
  for (float& p : m.params) p += small(rng);
  return m;
}

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
    const double saved = p[i];
    p[i] = saved + h;
    const double up = ReferenceLoss(arch, p, x, y, c.n);
    p[i] = saved - h;
    const double down = ReferenceLoss(arch, p, x, y, c.n);
    p[i] = saved;
    const double numeric = (up - down) / (2 * h);
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

// The production shape at its production batch, on a sample of parameters
// from every block (W1, b1, W2, b2): the GEMM paths with real blocking.
TEST(NetworkTest, GradientOfTheMnistMlpOnSampledParameters) {
  const Architecture arch = Architecture::Parse("mlp:784-128-10");
  const Model m = RandomModel(arch, 5);
  std::mt19937_64 rng(7);
  std::vector<float> x, y;
  const int n = 32;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, 64);
  std::vector<float> grad(arch.ParameterCount());
  const float loss = ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, grad.data(), ws);
  std::vector<double> p(m.params.begin(), m.params.end());
  EXPECT_NEAR(loss, ReferenceLoss(arch, p, x, y, n), 1e-4);
  const auto layers = arch.Layout();
  std::vector<std::size_t> picks = {0,
                                    layers[0].bias_offset - 1,
                                    layers[0].bias_offset,
                                    layers[1].weight_offset,
                                    layers[1].bias_offset,
                                    arch.ParameterCount() - 1};
  for (int i = 0; i < 40; ++i) picks.push_back(rng() % arch.ParameterCount());
  const double h = 1e-4;
  for (std::size_t i : picks) {
    const double saved = p[i];
    p[i] = saved + h;
    const double up = ReferenceLoss(arch, p, x, y, n);
    p[i] = saved - h;
    const double down = ReferenceLoss(arch, p, x, y, n);
    p[i] = saved;
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(grad[i], numeric, 1e-5 + 1e-3 * std::abs(numeric)) << "parameter " << i;
  }
}

// The production cnn at batch 34 (two im2col chunks, real GEMM blocking)
// on a sample of parameters from every block.
TEST(NetworkTest, GradientOfTheMnistCnnOnSampledParameters) {
  const Architecture arch = Architecture::Parse("cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10");
  const Model m = RandomModel(arch, 5);
  std::mt19937_64 rng(7);
  std::vector<float> x, y;
  const int n = 34;
  RandomBatch(arch, n, rng, x, y);
  Workspace ws(arch, 40);
  std::vector<float> grad(arch.ParameterCount());
  const float loss = ForwardBackward(arch, m.params.data(), x.data(), y.data(), n, grad.data(), ws);
  std::vector<double> p(m.params.begin(), m.params.end());
  EXPECT_NEAR(loss, ReferenceLoss(arch, p, x, y, n), 1e-4);
  std::vector<std::size_t> picks;
  for (const LayerLayout& l : arch.Layout()) {
    picks.push_back(l.weight_offset);
    picks.push_back(l.bias_offset - 1);
    picks.push_back(l.bias_offset);
    picks.push_back(l.bias_offset + l.out - 1);
  }
  for (int i = 0; i < 8; ++i) picks.push_back(rng() % arch.Layout()[1].bias_offset);
  const double h = 1e-4;
  for (std::size_t i : picks) {
    const double saved = p[i];
    p[i] = saved + h;
    const double up = ReferenceLoss(arch, p, x, y, n);
    p[i] = saved - h;
    const double down = ReferenceLoss(arch, p, x, y, n);
    p[i] = saved;
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(grad[i], numeric, 1e-5 + 1e-3 * std::abs(numeric)) << "parameter " << i;
  }
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
      const double saved = p[i];
      p[i] = saved + h;
      const double up = ReferenceLoss(arch, p, x, y, n);
      p[i] = saved - h;
      const double down = ReferenceLoss(arch, p, x, y, n);
      p[i] = saved;
      const double numeric = (up - down) / (2 * h);
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
      const double saved = p[i];
      p[i] = saved + h;
      const double up = ReferenceLoss(arch, p, x, y, 9, &weights_double);
      p[i] = saved - h;
      const double down = ReferenceLoss(arch, p, x, y, 9, &weights_double);
      p[i] = saved;
      const double numeric = (up - down) / (2 * h);
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
