// Architecture text form, parameter layout and initialisation (see model.h).
#include "fedsgd/model.h"

#include <charconv>
#include <cmath>
#include <random>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find(sep, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

[[noreturn]] void Bad(std::string_view text, const std::string& why) {
  throw Error("invalid model '" + std::string(text) + "': " + why +
              " (examples: mlp:784-128-10, mlp:784-128-64-10:tanh, "
              "mlp:784-128-10:relu:dropout=0.2, softmax:784-10, logistic:30, linear:13)");
}

int ParseWidth(std::string_view full, std::string_view w) {
  int value = 0;
  const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), value);
  if (ec != std::errc() || end != w.data() + w.size() || value < 1 || value > (1 << 24)) {
    Bad(full, "'" + std::string(w) + "' is not a layer width (a whole number >= 1)");
  }
  return value;
}

const char* Name(Activation a) {
  switch (a) {
    case Activation::kRelu:
      return "relu";
    case Activation::kTanh:
      return "tanh";
    case Activation::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

}  // namespace

Architecture Architecture::Parse(std::string_view text) {
  const std::vector<std::string_view> parts = Split(text, ':');
  if (parts.size() < 2 || parts[1].empty()) Bad(text, "expected KIND:WIDTHS");
  Architecture a;
  std::vector<int> widths;
  for (std::string_view w : Split(parts[1], '-')) widths.push_back(ParseWidth(text, w));
  const std::string_view kind = parts[0];
  if (kind == "linear" || kind == "logistic") {
    if (widths.size() != 1) Bad(text, std::string(kind) + " takes one width: its input size");
    a.kind = kind == "linear" ? ModelKind::kLinear : ModelKind::kLogistic;
    widths.push_back(1);
  } else if (kind == "softmax") {
    if (widths.size() != 2) Bad(text, "softmax takes INPUTS-CLASSES");
    if (widths[1] < 2) Bad(text, "softmax needs at least 2 classes");
    a.kind = ModelKind::kSoftmax;
  } else if (kind == "mlp") {
    if (widths.size() < 3)
      Bad(text, "mlp takes INPUTS-HIDDEN...-CLASSES (at least one hidden layer)");
    if (widths.back() < 2) Bad(text, "mlp needs at least 2 classes");
    a.kind = ModelKind::kMlp;
  } else {
    Bad(text,
        "unknown kind '" + std::string(kind) + "' (expected mlp, softmax, logistic or linear)");
  }
  a.widths = std::move(widths);
  // Each option at most once: "mlp:4-3-2:tanh:relu" is a typo, not a choice.
  bool have_activation = false, have_dropout = false;
  for (std::size_t i = 2; i < parts.size(); ++i) {
    const std::string_view opt = parts[i];
    if (a.kind != ModelKind::kMlp)
      Bad(text, "options like '" + std::string(opt) + "' are for mlp only");
    if (opt == "relu" || opt == "tanh" || opt == "sigmoid") {
      if (have_activation) Bad(text, "more than one activation");
      have_activation = true;
      a.activation = opt == "relu"   ? Activation::kRelu
                     : opt == "tanh" ? Activation::kTanh
                                     : Activation::kSigmoid;
    } else if (opt.starts_with("dropout=")) {
      if (have_dropout) Bad(text, "dropout given twice");
      have_dropout = true;
      const std::string_view value = opt.substr(8);
      // from_chars, not strtof: the text form must not depend on the locale.
      float p = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), p);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
          !(p >= 0.0f && p < 1.0f)) {
        Bad(text, "dropout must be a number in [0, 1)");
      }
      a.dropout = p;
    } else {
      Bad(text,
          "unknown option '" + std::string(opt) + "' (expected relu, tanh, sigmoid or dropout=P)");
    }
  }
  if (a.ParameterCount() > (std::size_t{1} << 31)) Bad(text, "too many parameters");
  return a;
}

std::string Architecture::ToString() const {
  std::string s;
  switch (kind) {
    case ModelKind::kLinear:
      return "linear:" + std::to_string(widths.front());
    case ModelKind::kLogistic:
      return "logistic:" + std::to_string(widths.front());
    case ModelKind::kSoftmax:
      s = "softmax:";
      break;
    case ModelKind::kMlp:
      s = "mlp:";
      break;
  }
  for (std::size_t i = 0; i < widths.size(); ++i) {
    if (i) s += '-';
    s += std::to_string(widths[i]);
  }
  if (kind == ModelKind::kMlp) {
    if (activation != Activation::kRelu || dropout > 0) s += std::string(":") + Name(activation);
    if (dropout > 0) {
      // The shortest text that reads back as the same float, so that
      // Parse(ToString()) == *this for any dropout, not just short ones.
      char buf[32];
      const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, dropout);
      s += ":dropout=";
      s.append(buf, end);
    }
  }
  return s;
}

LossKind Architecture::loss() const {
  switch (kind) {
    case ModelKind::kLinear:
      return LossKind::kMeanSquaredError;
    case ModelKind::kLogistic:
      return LossKind::kBinaryCrossEntropy;
    default:
      return LossKind::kCrossEntropy;
  }
}

int Architecture::num_classes() const {
  switch (kind) {
    case ModelKind::kLinear:
      return 0;
    case ModelKind::kLogistic:
      return 2;
    default:
      return widths.back();
  }
}

std::vector<LayerLayout> Architecture::Layout() const {
  std::vector<LayerLayout> layers;
  std::size_t offset = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    LayerLayout layer;
    layer.in = widths[l];
    layer.out = widths[l + 1];
    layer.weight_offset = offset;
    offset += static_cast<std::size_t>(layer.in) * layer.out;
    layer.bias_offset = offset;
    offset += layer.out;
    layers.push_back(layer);
  }
  return layers;
}

std::size_t Architecture::ParameterCount() const {
  std::size_t count = 0;
  for (std::size_t l = 0; l + 1 < widths.size(); ++l) {
    count += (static_cast<std::size_t>(widths[l]) + 1) * widths[l + 1];
  }
  return count;
}

Model Model::Create(const Architecture& arch, std::uint64_t seed) {
  Model m{arch, std::vector<float>(arch.ParameterCount(), 0.0f)};
  std::mt19937_64 rng(seed);
  const std::vector<LayerLayout> layers = arch.Layout();
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LayerLayout& layer = layers[l];
    float* w = m.params.data() + layer.weight_offset;
    const std::size_t count = static_cast<std::size_t>(layer.in) * layer.out;
    // He for layers feeding a ReLU; Glorot otherwise (incl. output layers).
    const bool relu = arch.kind == ModelKind::kMlp && l + 1 < layers.size() &&
                      arch.activation == Activation::kRelu;
    if (relu) {
      std::normal_distribution<float> dist(0.0f, std::sqrt(2.0f / static_cast<float>(layer.in)));
      for (std::size_t i = 0; i < count; ++i) w[i] = dist(rng);
    } else {
      const float limit = std::sqrt(6.0f / static_cast<float>(layer.in + layer.out));
      std::uniform_real_distribution<float> dist(-limit, limit);
      for (std::size_t i = 0; i < count; ++i) w[i] = dist(rng);
    }
  }
  return m;
}

}  // namespace fedsgd
