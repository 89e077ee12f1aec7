// Models: a flat float parameter vector plus an architecture.
//
// Everything that crosses the wire or goes into SQLite is the flat vector, so
// aggregation never needs to know the architecture. The architecture has a
// compact text form used on command lines and in plans:
//
//   linear:13                 13 inputs -> 1 output, mean squared error
//   logistic:30               30 inputs -> 1 output, binary cross-entropy
//   softmax:784-10            784 inputs -> 10 classes, cross-entropy
//   mlp:784-128-10            ReLU hidden layers, softmax output, cross-entropy
//   mlp:784-128-64-10:tanh    activation: relu (default), tanh or sigmoid
//   mlp:784-128-10:relu:dropout=0.2   dropout on hidden layers while training
//   cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10   a convolutional net (below)
//   cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10:dropout=0.5   dropout on its fN layers
//
// A cnn is its input shape CxHxW (channels x rows x columns), then stages in
// order, separated by '-':
//   cNkK     convolution: N output channels, K x K kernel, then ReLU;
//            optional suffixes sS (stride, default 1) and pP (zero padding
//            on every side, default 0, less than K), in that order:
//            c32k3s2p1
//   pK       max pooling over K x K windows with stride K (a partial window
//            at the right or bottom edge is dropped, as in PyTorch)
// then fN for each fully connected ReLU hidden layer, and last the number of
// classes (softmax cross-entropy). At least one convolution; the one option
// is :dropout=P, applied to the fN layers' outputs while training (it needs
// at least one fN layer; the convolutions keep every unit). Inputs are
// C x H x W per sample, channel after channel, each row-major (an IDX image
// is 1xHxW as it is stored).
//
// Parameter layout (fixed, part of the wire format): for each layer l in
// order, its weight matrix W_l (out x in, column-major) then its bias b_l
// (out). A forward pass computes z = W_l * a + b_l. A cnn's convolutions
// come first, each a layer with in = K*K*C_in and out = N: the weight of
// output channel o, input channel c, kernel row i and column j is
// W[o + N * (c + C_in * (j + K * i))]. Its dense layers follow, the first
// reading the last stage's output flattened as (row, column, channel) with
// the channel fastest: feature (y, x, c) of an h x w x C map is
// c + C * (x + w * y).
//
// Thread-safety: Architecture and Model are plain values; concurrent reads
// are safe, writes need external synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fedsgd {

enum class ModelKind { kLinear, kLogistic, kSoftmax, kMlp, kCnn };
enum class Activation { kRelu, kTanh, kSigmoid };
enum class LossKind { kMeanSquaredError, kBinaryCrossEntropy, kCrossEntropy };

// Where one layer's parameters live in the flat vector.
struct LayerLayout {
  int in = 0;
  int out = 0;
  std::size_t weight_offset = 0;  // W: out x in, column-major
  std::size_t bias_offset = 0;    // b: out
};

// A feature map's shape: channels x rows x columns.
struct ImageShape {
  int channels = 0;
  int height = 0;
  int width = 0;
  int size() const { return channels * height * width; }
  bool operator==(const ImageShape&) const = default;
};

// One stage of a cnn before its dense layers: a convolution (then ReLU) or
// a max pooling (kernel x kernel, stride kernel; channels etc. unused).
struct FeatureStage {
  enum class Type { kConv, kMaxPool };
  Type type = Type::kConv;
  int channels = 0;  // convolution: output channels
  int kernel = 0;
  int stride = 1;   // convolution only
  int padding = 0;  // convolution only
  bool operator==(const FeatureStage&) const = default;
};

struct Architecture {
  ModelKind kind = ModelKind::kSoftmax;
  // Input, hidden..., output; e.g. {784, 128, 10}. For a cnn: C*H*W, its
  // dense hidden widths, the classes (so input_size() and output_size()
  // mean the same for every kind); its convolutions are not listed here.
  std::vector<int> widths;
  Activation activation = Activation::kRelu;  // hidden layers of an MLP (a cnn: ReLU)
  float dropout = 0.0f;                       // hidden (mlp) / fN (cnn) layers, training only
  ImageShape input_shape;                     // cnn only
  std::vector<FeatureStage> stages;           // cnn only, in order

  // Parses the text form above. Throws fedsgd::Error naming the text and
  // what is wrong (unknown kind, bad width, missing layers, bad option).
  static Architecture Parse(std::string_view text);
  // The canonical text form; Parse(ToString()) == *this.
  std::string ToString() const;

  LossKind loss() const;
  int input_size() const { return widths.front(); }
  int output_size() const { return widths.back(); }
  // Classes for classifiers (2 for logistic), 0 for regression.
  int num_classes() const;
  // Every layer with parameters, in order: a cnn's convolutions, then the
  // dense layers.
  std::vector<LayerLayout> Layout() const;
  std::size_t ParameterCount() const;
  // A cnn's feature map shapes: [0] the input, [s + 1] after stage s.
  std::vector<ImageShape> StageShapes() const;

  bool operator==(const Architecture&) const = default;
};

struct Model {
  Architecture arch;
  std::vector<float> params;  // ParameterCount() floats, layout as above

  // A freshly initialised model: He-normal weights for ReLU layers
  // (convolutions: fan-in K*K*C_in), Glorot-uniform otherwise, zero biases. Deterministic for a
  // seed.
  static Model Create(const Architecture& arch, std::uint64_t seed);
};

}  // namespace fedsgd
