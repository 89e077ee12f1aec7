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
//
// Parameter layout (fixed, part of the wire format): for each layer l in
// order, its weight matrix W_l (out x in, column-major) then its bias b_l
// (out). A forward pass computes z = W_l * a + b_l.
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

enum class ModelKind { kLinear, kLogistic, kSoftmax, kMlp };
enum class Activation { kRelu, kTanh, kSigmoid };
enum class LossKind { kMeanSquaredError, kBinaryCrossEntropy, kCrossEntropy };

// Where one layer's parameters live in the flat vector.
struct LayerLayout {
  int in = 0;
  int out = 0;
  std::size_t weight_offset = 0;  // W: out x in, column-major
  std::size_t bias_offset = 0;    // b: out
};

struct Architecture {
  ModelKind kind = ModelKind::kSoftmax;
  std::vector<int> widths;                    // input, hidden..., output; e.g. {784, 128, 10}
  Activation activation = Activation::kRelu;  // hidden layers of an MLP
  float dropout = 0.0f;                       // hidden layers, training only

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
  std::vector<LayerLayout> Layout() const;
  std::size_t ParameterCount() const;

  bool operator==(const Architecture&) const = default;
};

struct Model {
  Architecture arch;
  std::vector<float> params;  // ParameterCount() floats, layout as above

  // A freshly initialised model: He-normal weights for ReLU layers,
  // Glorot-uniform otherwise, zero biases. Deterministic for a seed.
  static Model Create(const Architecture& arch, std::uint64_t seed);
};

}  // namespace fedsgd
