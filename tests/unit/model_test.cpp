// Architectures and models: every text form, canonical printing and its
// round trip, refusals with a clear message, the parameter layout that is
// part of the wire format, and seeded initialisation (He / Glorot, zero
// biases).
#include "fedsgd/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

TEST(ModelTest, ParsesEveryFormAndPrintsItBack) {
  for (const char* text :
       {"linear:13", "logistic:30", "softmax:784-10", "mlp:784-128-10", "mlp:784-128-64-10:tanh",
        "mlp:4-3-2:sigmoid", "mlp:784-128-10:relu:dropout=0.2", "mlp:4-3-2:tanh:dropout=0.5",
        "cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10", "cnn:3x32x32-c8k3p1-c8k3s2p1-p2-f64-f32-10",
        "cnn:1x5x5-c2k5-3", "cnn:2x9x7-p2-c3k2s2-4",
        "cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10:dropout=0.5",
        "cnn:1x5x5-c2k3-f4-f3-2:dropout=0.25"}) {
    const Architecture a = Architecture::Parse(text);
    EXPECT_EQ(a.ToString(), text);
    EXPECT_EQ(Architecture::Parse(a.ToString()), a);
  }
}

TEST(ModelTest, ParsedFields) {
  const Architecture m = Architecture::Parse("mlp:784-128-64-10:tanh");
  EXPECT_EQ(m.kind, ModelKind::kMlp);
  EXPECT_EQ(m.widths, (std::vector<int>{784, 128, 64, 10}));
  EXPECT_EQ(m.activation, Activation::kTanh);
  EXPECT_EQ(m.dropout, 0.0f);
  EXPECT_EQ(m.loss(), LossKind::kCrossEntropy);
  EXPECT_EQ(m.input_size(), 784);
  EXPECT_EQ(m.output_size(), 10);
  EXPECT_EQ(m.num_classes(), 10);

  const Architecture d = Architecture::Parse("mlp:784-128-10:relu:dropout=0.2");
  EXPECT_EQ(d.activation, Activation::kRelu);
  EXPECT_FLOAT_EQ(d.dropout, 0.2f);

  const Architecture lin = Architecture::Parse("linear:13");
  EXPECT_EQ(lin.kind, ModelKind::kLinear);
  EXPECT_EQ(lin.widths, (std::vector<int>{13, 1}));
  EXPECT_EQ(lin.loss(), LossKind::kMeanSquaredError);
  EXPECT_EQ(lin.num_classes(), 0);

  const Architecture log = Architecture::Parse("logistic:30");
  EXPECT_EQ(log.widths, (std::vector<int>{30, 1}));
  EXPECT_EQ(log.loss(), LossKind::kBinaryCrossEntropy);
  EXPECT_EQ(log.num_classes(), 2);

  const Architecture soft = Architecture::Parse("softmax:784-10");
  EXPECT_EQ(soft.kind, ModelKind::kSoftmax);
  EXPECT_EQ(soft.loss(), LossKind::kCrossEntropy);
  EXPECT_EQ(soft.num_classes(), 10);
}

TEST(ModelTest, CanonicalFormDropsDefaultsAndKeepsEveryDropout) {
  // Defaults are not printed; options may come in either order.
  EXPECT_EQ(Architecture::Parse("mlp:784-128-10:relu").ToString(), "mlp:784-128-10");
  EXPECT_EQ(Architecture::Parse("mlp:784-128-10:dropout=0").ToString(), "mlp:784-128-10");
  EXPECT_EQ(Architecture::Parse("mlp:4-3-2:dropout=0.25").ToString(),
            "mlp:4-3-2:relu:dropout=0.25");
  EXPECT_EQ(Architecture::Parse("mlp:4-3-2:dropout=0.25:tanh").ToString(),
            "mlp:4-3-2:tanh:dropout=0.25");
  EXPECT_EQ(Architecture::Parse("cnn:1x5x5-c2k3-f4-2:dropout=0").ToString(), "cnn:1x5x5-c2k3-f4-2");
  EXPECT_FLOAT_EQ(Architecture::Parse("cnn:1x5x5-c2k3-f4-2:dropout=0.3").dropout, 0.3f);
  // Any float dropout survives the round trip exactly, not just short ones.
  for (float p : {0.1f, 0.2f, 0.123456789f, 1e-7f, 0.99999994f, 1.0f / 3.0f}) {
    Architecture a = Architecture::Parse("mlp:4-3-2");
    a.dropout = p;
    const Architecture back = Architecture::Parse(a.ToString());
    EXPECT_EQ(back, a) << a.ToString();
    EXPECT_EQ(back.dropout, p);
  }
}

TEST(ModelTest, RefusesBadTextWithAClearMessage) {
  const char* bad[] = {"",
                       "mlp",
                       "mlp:",
                       "mlp:784-10",
                       "mlp:784--10",
                       "mlp:784-0-10",
                       "mlp:784-x-10",
                       "mlp:784-128-10-",
                       "mlp:-4-3-2",
                       "mlp:4.5-3-2",
                       "mlp:99999999999-3-2",
                       "cnn:784-10",
                       "cnn:1x28x28",
                       "cnn:1x28x28-10",
                       "cnn:1x28-c4k3-10",
                       "cnn:0x28x28-c4k3-10",
                       "cnn:1x28x28-c0k3-10",
                       "cnn:1x28x28-c4k0-10",
                       "cnn:1x28x28-c4k29-10",
                       "cnn:1x28x28-c4k3s0-10",
                       "cnn:1x28x28-c4k3p3-10",
                       "cnn:1x28x28-c4k3p1s2-10",
                       "cnn:1x28x28-c4k3s2s2-10",
                       "cnn:1x28x28-c4-10",
                       "cnn:1x28x28-k3-10",
                       "cnn:1x28x28-c4k3-p0-10",
                       "cnn:1x28x28-c4k3-p27-10",
                       "cnn:1x28x28-p2-10",
                       "cnn:1x28x28-c4k3-f0-10",
                       "cnn:1x28x28-c4k3-f8-p2-10",
                       "cnn:1x28x28-c4k3-x2-10",
                       "cnn:1x28x28-c4k3-1",
                       "cnn:1x28x28-c4k3-10-",
                       "cnn:1x28x28-c4k3--10",
                       "cnn:1x28x28-C4K3-10",
                       "cnn:1x28x28-c4k3-10:dropout=0.2",  // no fN layer to drop from
                       "cnn:1x28x28-c4k3-f8-10:relu",
                       "cnn:1x28x28-c4k3-f8-10:tanh:dropout=0.2",
                       "cnn:1x28x28-c4k3-f8-10:dropout=0.1:dropout=0.2",
                       "cnn:1x28x28-c4k3-f8-10:dropout=1",
                       "cnn:1x28x28-c4k3-f8-10:",
                       "cnn:1x4x4-c2k3-p2-p2-10",
                       "MLP:784-128-10",
                       " mlp:784-128-10",
                       "softmax:784",
                       "softmax:784-1",
                       "softmax:784-10-10",
                       "linear:3-4",
                       "linear:0",
                       "logistic:",
                       "mlp:4-3-1",
                       "mlp:4-3-2:swish",
                       "mlp:4-3-2:",
                       "mlp:4-3-2:tanh:relu",
                       "mlp:4-3-2:dropout=0.1:dropout=0.2",
                       "mlp:4-3-2:dropout=1",
                       "mlp:4-3-2:dropout=-0.1",
                       "mlp:4-3-2:dropout=",
                       "mlp:4-3-2:dropout=abc",
                       "mlp:4-3-2:dropout=0.2x",
                       "mlp:4-3-2:dropout=nan",
                       "softmax:4-3:tanh",
                       "linear:4:dropout=0.1"};
  for (const char* text : bad) {
    try {
      Architecture::Parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("invalid model '" + std::string(text) + "'"), std::string::npos) << what;
    }
  }
  // The message says what is wrong, not only that something is.
  try {
    Architecture::Parse("rnn:784-10");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown kind 'rnn'"), std::string::npos) << e.what();
  }
  const std::pair<const char*, const char*> reasons[] = {
      {"cnn:1x28x28-c4k29-10", "kernel larger than its 1x28x28 input"},
      {"cnn:1x28x28-c0k3-10", "at least 1 output channel"},
      {"cnn:1x28x28-c4k3-p27-10", "pooling window larger than its 4x26x26 input"},
      {"cnn:1x28x28-p2-10", "at least one convolution"},
      {"cnn:1x28x28-c4k3-f8-p2-10", "before the dense layers"},
      {"cnn:1x28x28-c4k3p3-10", "padding must be less than the kernel size"},
      {"cnn:1x28-c4k3-10", "input shape CxHxW"}};
  for (const auto& [text, reason] : reasons) {
    try {
      Architecture::Parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  }
}

TEST(ModelTest, CnnFieldsShapesAndCanonicalForm) {
  const Architecture a = Architecture::Parse("cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10");
  EXPECT_EQ(a.kind, ModelKind::kCnn);
  EXPECT_EQ(a.input_shape, (ImageShape{1, 28, 28}));
  EXPECT_EQ(a.widths, (std::vector<int>{784, 128, 10}));
  EXPECT_EQ(a.input_size(), 784);
  EXPECT_EQ(a.output_size(), 10);
  EXPECT_EQ(a.num_classes(), 10);
  EXPECT_EQ(a.loss(), LossKind::kCrossEntropy);
  ASSERT_EQ(a.stages.size(), 4u);
  EXPECT_EQ(a.stages[0], (FeatureStage{FeatureStage::Type::kConv, 16, 5, 1, 0}));
  EXPECT_EQ(a.stages[1].type, FeatureStage::Type::kMaxPool);
  EXPECT_EQ(a.stages[1].kernel, 2);
  const std::vector<ImageShape> shapes = a.StageShapes();
  EXPECT_EQ(shapes, (std::vector<ImageShape>{
                        {1, 28, 28}, {16, 24, 24}, {16, 12, 12}, {32, 8, 8}, {32, 4, 4}}));
  // Stride, padding and a partial pooling window (dropped).
  EXPECT_EQ(Architecture::Parse("cnn:3x7x9-c4k3s2p1-p3-5").StageShapes().back(),
            (ImageShape{4, 1, 1}));
  EXPECT_EQ(Architecture::Parse("cnn:3x7x9-c4k3s2p1-5").StageShapes().back(),
            (ImageShape{4, 4, 5}));
  // Defaults are dropped from the canonical form.
  EXPECT_EQ(Architecture::Parse("cnn:1x8x8-c4k3s1p0-p2-3").ToString(), "cnn:1x8x8-c4k3-p2-3");
  EXPECT_NE(Architecture::Parse("cnn:1x8x8-c4k3-3"), Architecture::Parse("cnn:1x8x8-c4k3p1-3"));
}

TEST(ModelTest, CnnLayoutAndParameterCount) {
  const Architecture a = Architecture::Parse("cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10");
  const std::vector<LayerLayout> layers = a.Layout();
  ASSERT_EQ(layers.size(), 4u);
  EXPECT_EQ(layers[0].in, 25);
  EXPECT_EQ(layers[0].out, 16);
  EXPECT_EQ(layers[1].in, 16 * 25);
  EXPECT_EQ(layers[1].out, 32);
  EXPECT_EQ(layers[2].in, 32 * 4 * 4);
  EXPECT_EQ(layers[2].out, 128);
  EXPECT_EQ(layers[3].in, 128);
  EXPECT_EQ(layers[3].out, 10);
  const std::size_t expected =
      (25 * 16 + 16) + (400 * 32 + 32) + (512 * 128 + 128) + (128 * 10 + 10);
  EXPECT_EQ(a.ParameterCount(), expected);
  std::size_t offset = 0;
  for (const LayerLayout& l : layers) {
    EXPECT_EQ(l.weight_offset, offset);
    EXPECT_EQ(l.bias_offset, offset + static_cast<std::size_t>(l.in) * l.out);
    offset = l.bias_offset + l.out;
  }
  EXPECT_EQ(offset, a.ParameterCount());
  // No hidden dense layer: the flattened features go straight to the classes.
  const Architecture b = Architecture::Parse("cnn:3x8x8-c4k3p1-p2-10");
  ASSERT_EQ(b.Layout().size(), 2u);
  EXPECT_EQ(b.Layout()[0].in, 27);
  EXPECT_EQ(b.Layout()[1].in, 4 * 4 * 4);
  EXPECT_EQ(b.ParameterCount(), (27u * 4 + 4) + (64u * 10 + 10));
}

TEST(ModelTest, LayoutAndParameterCount) {
  const Architecture a = Architecture::Parse("mlp:784-128-10");
  EXPECT_EQ(a.ParameterCount(), 101770u);
  const std::vector<LayerLayout> layers = a.Layout();
  ASSERT_EQ(layers.size(), 2u);
  EXPECT_EQ(layers[0].in, 784);
  EXPECT_EQ(layers[0].out, 128);
  EXPECT_EQ(layers[0].weight_offset, 0u);
  EXPECT_EQ(layers[0].bias_offset, 784u * 128u);
  EXPECT_EQ(layers[1].in, 128);
  EXPECT_EQ(layers[1].out, 10);
  EXPECT_EQ(layers[1].weight_offset, 784u * 128u + 128u);
  EXPECT_EQ(layers[1].bias_offset, 784u * 128u + 128u + 1280u);
  EXPECT_EQ(layers[1].bias_offset + 10, a.ParameterCount());

  EXPECT_EQ(Architecture::Parse("mlp:784-128-64-10").ParameterCount(),
            784u * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10);
  EXPECT_EQ(Architecture::Parse("softmax:784-10").ParameterCount(), 7850u);
  EXPECT_EQ(Architecture::Parse("logistic:30").ParameterCount(), 31u);
  EXPECT_EQ(Architecture::Parse("linear:13").ParameterCount(), 14u);

  // Layers tile the vector with no gaps: W_l, b_l, W_{l+1}, ...
  for (const char* text : {"mlp:5-4-3-2", "softmax:6-3", "linear:2"}) {
    const Architecture arch = Architecture::Parse(text);
    std::size_t offset = 0;
    for (const LayerLayout& l : arch.Layout()) {
      EXPECT_EQ(l.weight_offset, offset) << text;
      EXPECT_EQ(l.bias_offset, offset + static_cast<std::size_t>(l.in) * l.out) << text;
      offset = l.bias_offset + l.out;
    }
    EXPECT_EQ(offset, arch.ParameterCount()) << text;
  }
}

struct Moments {
  double mean = 0, variance = 0, max_abs = 0;
};

Moments Of(const float* w, std::size_t n) {
  Moments m;
  for (std::size_t i = 0; i < n; ++i) m.mean += w[i];
  m.mean /= static_cast<double>(n);
  for (std::size_t i = 0; i < n; ++i) {
    m.variance += (w[i] - m.mean) * (w[i] - m.mean);
    m.max_abs = std::max(m.max_abs, std::abs(static_cast<double>(w[i])));
  }
  m.variance /= static_cast<double>(n);
  return m;
}

TEST(ModelTest, InitialisationIsDeterministicForASeed) {
  const Architecture a = Architecture::Parse("mlp:784-128-10");
  const Model m1 = Model::Create(a, 7), m2 = Model::Create(a, 7), m3 = Model::Create(a, 8);
  EXPECT_EQ(m1.arch, a);
  EXPECT_EQ(m1.params.size(), a.ParameterCount());
  EXPECT_EQ(m1.params, m2.params);
  EXPECT_NE(m1.params, m3.params);
}

TEST(ModelTest, HeNormalForReluLayersGlorotUniformOtherwiseZeroBiases) {
  // ReLU hidden layer: He-normal, variance 2 / fan_in. Output layer: Glorot
  // uniform on [-r, r], r = sqrt(6 / (in + out)), variance r^2 / 3.
  const Architecture relu = Architecture::Parse("mlp:784-128-10");
  const Model m = Model::Create(relu, 1);
  const auto layers = relu.Layout();
  const Moments he = Of(m.params.data(), 784u * 128u);
  EXPECT_NEAR(he.mean, 0.0, 0.01 * std::sqrt(2.0 / 784));
  EXPECT_NEAR(he.variance, 2.0 / 784.0, 0.03 * 2.0 / 784.0);
  EXPECT_GT(he.max_abs, 3.5 * std::sqrt(2.0 / 784.0));  // normal tails, not uniform

  const double r = std::sqrt(6.0 / (128 + 10));
  const Moments out = Of(m.params.data() + layers[1].weight_offset, 1280);
  EXPECT_LE(out.max_abs, r);
  EXPECT_NEAR(out.variance, r * r / 3, 0.1 * r * r / 3);

  for (const LayerLayout& l : layers) {
    for (int i = 0; i < l.out; ++i) EXPECT_EQ(m.params[l.bias_offset + i], 0.0f);
  }

  // tanh / sigmoid hidden layers and the regressions: Glorot everywhere.
  for (const char* text : {"mlp:300-200-10:tanh", "mlp:300-200-10:sigmoid", "softmax:300-200"}) {
    const Architecture arch = Architecture::Parse(text);
    const Model g = Model::Create(arch, 2);
    const double limit = std::sqrt(6.0 / (300 + 200));
    const Moments first = Of(g.params.data(), 300u * 200u);
    EXPECT_LE(first.max_abs, limit) << text;
    EXPECT_GT(first.max_abs, 0.99 * limit) << text;
    EXPECT_NEAR(first.variance, limit * limit / 3, 0.03 * limit * limit / 3) << text;
    EXPECT_NEAR(first.mean, 0.0, 0.01 * limit) << text;
  }
  // A cnn: He-normal on every convolution (fan-in K*K*C_in) and hidden
  // dense layer, Glorot on the output layer, zero biases.
  const Architecture cnn = Architecture::Parse("cnn:3x16x16-c64k5-c32k3-p2-f200-10");
  const Model c = Model::Create(cnn, 4);
  const auto cl = cnn.Layout();
  ASSERT_EQ(cl.size(), 4u);
  for (std::size_t l = 0; l < 3; ++l) {
    const std::size_t count = static_cast<std::size_t>(cl[l].in) * cl[l].out;
    const Moments w = Of(c.params.data() + cl[l].weight_offset, count);
    const double variance = 2.0 / cl[l].in;
    EXPECT_NEAR(w.variance, variance, 0.05 * variance) << "layer " << l;
    EXPECT_NEAR(w.mean, 0.0, 0.05 * std::sqrt(variance)) << "layer " << l;
    EXPECT_GT(w.max_abs, 3.0 * std::sqrt(variance)) << "layer " << l;
    for (int i = 0; i < cl[l].out; ++i) EXPECT_EQ(c.params[cl[l].bias_offset + i], 0.0f);
  }
  const double rc = std::sqrt(6.0 / (200 + 10));
  EXPECT_LE(Of(c.params.data() + cl[3].weight_offset, 2000).max_abs, rc);
  EXPECT_EQ(Model::Create(cnn, 4).params, c.params);
  EXPECT_NE(Model::Create(cnn, 5).params, c.params);

  const Model lin = Model::Create(Architecture::Parse("logistic:30"), 3);
  for (int i = 0; i < 30; ++i) EXPECT_LE(std::abs(lin.params[i]), std::sqrt(6.0 / 31));
  EXPECT_EQ(lin.params[30], 0.0f);
}

}  // namespace
}  // namespace fedsgd
