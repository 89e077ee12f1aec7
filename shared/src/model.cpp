// Architecture text form, parameter layout and initialisation (see model.h).
#include "fedsgd/model.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <random>
#include <utility>

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
              "mlp:784-128-10:relu:dropout=0.2, softmax:784-10, logistic:30, linear:13, "
              "cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10)");
}

int ParseWidth(std::string_view full, std::string_view w) {
  int value = 0;
  const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), value);
  if (ec != std::errc() || end != w.data() + w.size() || value < 1 || value > (1 << 24)) {
    Bad(full, "'" + std::string(w) + "' is not a layer width (a whole number >= 1)");
  }
  return value;
}

// Whether digits are a whole number in [low, 65536]; if so, it is in value.
bool ParseSmall(std::string_view digits, int low, int& value) {
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  return !digits.empty() && ec == std::errc() && end == digits.data() + digits.size() &&
         value >= low && value <= (1 << 16);
}

// A stage token split into letter-number pairs: "c32k3s2p1" ->
// {c 32, k 3, s 2, p 1}. Empty if the token is not of that form.
std::vector<std::pair<char, std::string_view>> Tagged(std::string_view token) {
  std::vector<std::pair<char, std::string_view>> pairs;
  std::size_t i = 0;
  while (i < token.size()) {
    const char tag = token[i++];
    if (tag < 'a' || tag > 'z') return {};
    const std::size_t start = i;
    while (i < token.size() && token[i] >= '0' && token[i] <= '9') ++i;
    if (i == start) return {};
    pairs.emplace_back(tag, token.substr(start, i - start));
  }
  return pairs;
}

// The shape after a stage (which Parse checked fits its input).
ImageShape After(const FeatureStage& s, const ImageShape& in) {
  if (s.type == FeatureStage::Type::kMaxPool) {
    return {in.channels, in.height / s.kernel, in.width / s.kernel};
  }
  return {s.channels, (in.height + 2 * s.padding - s.kernel) / s.stride + 1,
          (in.width + 2 * s.padding - s.kernel) / s.stride + 1};
}

std::string ShapeText(const ImageShape& s) {
  return std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
         std::to_string(s.width);
}

// cnn:CxHxW-stages-fN...-CLASSES (see model.h).
void ParseCnn(std::string_view text, std::string_view body, Architecture& a) {
  const std::vector<std::string_view> tokens = Split(body, '-');
  const std::vector<std::string_view> dims = Split(tokens[0], 'x');
  int c = 0, h = 0, w = 0;
  if (dims.size() != 3 || !ParseSmall(dims[0], 1, c) || !ParseSmall(dims[1], 1, h) ||
      !ParseSmall(dims[2], 1, w)) {
    Bad(text, "a cnn starts with its input shape CxHxW, e.g. 1x28x28 (each in 1..65536), not '" +
                  std::string(tokens[0]) + "'");
  }
  if (tokens.size() < 3) Bad(text, "a cnn takes CxHxW-STAGES...-CLASSES");
  a.kind = ModelKind::kCnn;
  a.input_shape = {c, h, w};
  a.widths = {c * h * w};
  if (static_cast<long long>(c) * h * w > (1 << 24)) Bad(text, "input larger than 2^24 values");
  ImageShape shape = a.input_shape;
  bool dense = false;
  for (std::size_t t = 1; t < tokens.size(); ++t) {
    const std::string_view token = tokens[t];
    const std::string quoted = "'" + std::string(token) + "'";
    if (t + 1 == tokens.size()) {
      int classes = 0;
      if (!ParseSmall(token, 2, classes))
        Bad(text, "a cnn ends with its number of classes (>= 2), not " + quoted);
      a.widths.push_back(classes);
      break;
    }
    const auto pairs = Tagged(token);
    if (pairs.empty()) Bad(text, quoted + " is not a stage (cNkK[sS][pP], pK or fN)");
    const char tag = pairs[0].first;
    FeatureStage s;
    if (tag == 'f') {
      int units = 0;
      if (pairs.size() != 1 || !ParseSmall(pairs[0].second, 1, units))
        Bad(text, quoted + ": a dense layer is fN with N >= 1");
      a.widths.push_back(units);
      dense = true;
      continue;
    }
    if (dense) Bad(text, quoted + ": convolutions and pooling come before the dense layers");
    if (tag == 'p') {
      s.type = FeatureStage::Type::kMaxPool;
      if (pairs.size() != 1 || !ParseSmall(pairs[0].second, 1, s.kernel))
        Bad(text, quoted + ": max pooling is pK with K >= 1");
      if (s.kernel > shape.height || s.kernel > shape.width)
        Bad(text, quoted + ": pooling window larger than its " + ShapeText(shape) + " input");
    } else if (tag == 'c') {
      // c, k, then optional s and p, each once and in this order.
      const bool ok = pairs.size() >= 2 && pairs[1].first == 'k' &&
                      ParseSmall(pairs[0].second, 0, s.channels) &&
                      ParseSmall(pairs[1].second, 0, s.kernel);
      if (!ok) Bad(text, quoted + ": a convolution is cNkK[sS][pP], e.g. c32k3s2p1");
      std::size_t i = 2;
      if (i < pairs.size() && pairs[i].first == 's' && ParseSmall(pairs[i].second, 0, s.stride))
        ++i;
      if (i < pairs.size() && pairs[i].first == 'p' && ParseSmall(pairs[i].second, 0, s.padding))
        ++i;
      if (i != pairs.size())
        Bad(text, quoted + ": a convolution is cNkK[sS][pP] (suffixes s then p, once each)");
      if (s.channels < 1) Bad(text, quoted + ": a convolution needs at least 1 output channel");
      if (s.kernel < 1) Bad(text, quoted + ": kernel size must be at least 1");
      if (s.stride < 1) Bad(text, quoted + ": stride must be at least 1");
      if (s.padding >= s.kernel) Bad(text, quoted + ": padding must be less than the kernel size");
      if (s.kernel > shape.height + 2 * s.padding || s.kernel > shape.width + 2 * s.padding) {
        Bad(text, quoted + ": kernel larger than its " + ShapeText(shape) + " input" +
                      (s.padding ? " (padded)" : ""));
      }
    } else {
      Bad(text, quoted + " is not a stage (cNkK[sS][pP], pK or fN)");
    }
    shape = After(s, shape);
    if (static_cast<long long>(shape.channels) * shape.height * shape.width > (1 << 24))
      Bad(text, quoted + ": feature map larger than 2^24 values");
    a.stages.push_back(s);
  }
  if (std::none_of(a.stages.begin(), a.stages.end(),
                   [](const FeatureStage& s) { return s.type == FeatureStage::Type::kConv; })) {
    Bad(text, "a cnn needs at least one convolution (cNkK)");
  }
}

// The P of "dropout=P": a number in [0, 1).
float ParseDropout(std::string_view text, std::string_view value) {
  // from_chars, not strtof: the text form must not depend on the locale.
  float p = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), p);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() ||
      !(p >= 0.0f && p < 1.0f)) {
    Bad(text, "dropout must be a number in [0, 1)");
  }
  return p;
}

// ":dropout=P" in the shortest text that reads back as the same float, so
// that Parse(ToString()) == *this for any dropout, not just short ones.
std::string DropoutText(float dropout) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, dropout);
  return ":dropout=" + std::string(buf, end);
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
  if (parts[0] == "cnn") {
    ParseCnn(text, parts[1], a);
    // Its one option: dropout on the fN layers (the convolutions keep every
    // unit; their ReLU is fixed).
    for (std::size_t i = 2; i < parts.size(); ++i) {
      if (!parts[i].starts_with("dropout=")) {
        Bad(text, "unknown option '" + std::string(parts[i]) + "' (a cnn takes only dropout=P)");
      }
      if (i > 2) Bad(text, "dropout given twice");
      a.dropout = ParseDropout(text, parts[i].substr(8));
    }
    if (a.dropout > 0 && a.widths.size() < 3) {
      Bad(text, "dropout applies to the fN layers, and this cnn has none");
    }
    if (a.ParameterCount() > (std::size_t{1} << 31)) Bad(text, "too many parameters");
    return a;
  }
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
    Bad(text, "unknown kind '" + std::string(kind) +
                  "' (expected mlp, cnn, softmax, logistic or linear)");
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
      a.dropout = ParseDropout(text, opt.substr(8));
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
    case ModelKind::kCnn:
      s = "cnn:" + ShapeText(input_shape);
      for (const FeatureStage& stage : stages) {
        if (stage.type == FeatureStage::Type::kMaxPool) {
          s += "-p" + std::to_string(stage.kernel);
          continue;
        }
        s += "-c" + std::to_string(stage.channels) + "k" + std::to_string(stage.kernel);
        if (stage.stride != 1) s += "s" + std::to_string(stage.stride);
        if (stage.padding != 0) s += "p" + std::to_string(stage.padding);
      }
      for (std::size_t i = 1; i + 1 < widths.size(); ++i) s += "-f" + std::to_string(widths[i]);
      s += "-" + std::to_string(widths.back());
      if (dropout > 0) s += DropoutText(dropout);
      return s;
  }
  for (std::size_t i = 0; i < widths.size(); ++i) {
    if (i) s += '-';
    s += std::to_string(widths[i]);
  }
  if (kind == ModelKind::kMlp) {
    if (activation != Activation::kRelu || dropout > 0) s += std::string(":") + Name(activation);
    if (dropout > 0) s += DropoutText(dropout);
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

std::vector<ImageShape> Architecture::StageShapes() const {
  std::vector<ImageShape> shapes = {input_shape};
  for (const FeatureStage& s : stages) shapes.push_back(After(s, shapes.back()));
  return shapes;
}

std::vector<LayerLayout> Architecture::Layout() const {
  std::vector<LayerLayout> layers;
  std::size_t offset = 0;
  auto add = [&](int in, int out) {
    LayerLayout layer;
    layer.in = in;
    layer.out = out;
    layer.weight_offset = offset;
    offset += static_cast<std::size_t>(in) * out;
    layer.bias_offset = offset;
    offset += out;
    layers.push_back(layer);
  };
  if (kind == ModelKind::kCnn) {
    const std::vector<ImageShape> shapes = StageShapes();
    for (std::size_t s = 0; s < stages.size(); ++s) {
      if (stages[s].type != FeatureStage::Type::kConv) continue;
      add(stages[s].kernel * stages[s].kernel * shapes[s].channels, stages[s].channels);
    }
    add(shapes.back().size(), widths[1]);
    for (std::size_t l = 1; l + 1 < widths.size(); ++l) add(widths[l], widths[l + 1]);
    return layers;
  }
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
  if (kind == ModelKind::kCnn) {
    const LayerLayout last = Layout().back();
    return last.bias_offset + static_cast<std::size_t>(last.out);
  }
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
    const bool relu = (arch.kind == ModelKind::kMlp || arch.kind == ModelKind::kCnn) &&
                      l + 1 < layers.size() && arch.activation == Activation::kRelu;
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
