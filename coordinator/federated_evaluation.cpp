// Federated evaluation summary (see federated_evaluation.h).
#include "federated_evaluation.h"

#include <algorithm>

namespace fedsgd {

std::optional<FederatedEvaluation> SummariseFederatedEvaluation(
    const std::vector<wire::HeldOutEvaluation>& evaluations) {
  if (evaluations.empty()) return std::nullopt;
  FederatedEvaluation f;
  std::vector<double> accuracies;
  accuracies.reserve(evaluations.size());
  double weight = 0, accuracy = 0, loss = 0;
  for (const wire::HeldOutEvaluation& e : evaluations) {
    const auto w = static_cast<double>(e.samples);
    weight += w;
    accuracy += w * e.accuracy;
    loss += w * e.loss;
    f.samples += e.samples;
    accuracies.push_back(e.accuracy);
  }
  f.devices = evaluations.size();
  f.accuracy = weight > 0 ? accuracy / weight : 0;
  f.loss = weight > 0 ? loss / weight : 0;
  std::sort(accuracies.begin(), accuracies.end());
  const std::size_t n = accuracies.size();
  f.min_accuracy = accuracies.front();
  f.max_accuracy = accuracies.back();
  f.median_accuracy =
      n % 2 == 1 ? accuracies[n / 2] : (accuracies[n / 2 - 1] + accuracies[n / 2]) / 2;
  return f;
}

}  // namespace fedsgd
