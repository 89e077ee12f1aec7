// LogitOffsets and ClassWeights: class counts turned into the trainer's
// logit offsets and class weights (see class_balance.h).
#include "fedsgd/class_balance.h"

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// Samples of each of `classes` classes in data; other targets are skipped.
std::vector<double> ClassCounts(const DatasetView& data, int classes) {
  std::vector<double> counts(static_cast<std::size_t>(classes), 0.0);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const float label = data.target(i);
    if (label >= 0 && label < static_cast<float>(classes)) {
      counts[static_cast<std::size_t>(label)] += 1;
    }
  }
  return counts;
}

}  // namespace

ClassWeighting ParseClassWeighting(std::string_view text) {
  if (text == "none") return ClassWeighting::kNone;
  if (text == "inverse_frequency") return ClassWeighting::kInverseFrequency;
  throw Error("unknown class weighting '" + std::string(text) +
              "' for --class-weighting (expected none or inverse_frequency)");
}

std::string ToString(ClassWeighting weighting) {
  return weighting == ClassWeighting::kNone ? "none" : "inverse_frequency";
}

std::vector<float> LogitOffsets(const DatasetView& data, int classes, float tau) {
  if (classes < 1) throw Error("logit adjustment needs a classifier");
  const std::vector<double> counts = ClassCounts(data, classes);
  const double total = static_cast<double>(data.size()) + classes;
  std::vector<float> offsets(counts.size());
  for (std::size_t c = 0; c < counts.size(); ++c) {
    offsets[c] = static_cast<float>(tau * std::log((counts[c] + 1) / total));
  }
  return offsets;
}

std::vector<float> ClassWeights(const DatasetView& data, int classes) {
  if (classes < 1) throw Error("class weighting needs a classifier");
  const std::vector<double> counts = ClassCounts(data, classes);
  double inverse_sum = 0;
  int present = 0;
  for (const double n : counts) {
    if (n > 0) {
      inverse_sum += 1 / n;
      present += 1;
    }
  }
  std::vector<float> weights(counts.size(), 1.0f);
  for (std::size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] > 0) weights[c] = static_cast<float>(present / (counts[c] * inverse_sum));
  }
  return weights;
}

}  // namespace fedsgd
