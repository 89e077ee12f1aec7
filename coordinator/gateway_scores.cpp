// CombineBoardScores (see gateway_scores.h).
#include "gateway_scores.h"

#include <algorithm>

namespace fedsgd {

GatewayScores CombineBoardScores(const std::vector<DeviceContribution>& boards) {
  double loss = 0, accuracy = 0, personal_loss = 0, personal_accuracy = 0;
  std::uint64_t samples = 0;
  bool every_personal = true;
  for (const DeviceContribution& c : boards) {
    if (!c.evaluation) continue;
    const auto n = static_cast<double>(c.evaluation->samples);
    loss += c.evaluation->loss * n;
    accuracy += c.evaluation->accuracy * n;
    samples += c.evaluation->samples;
    if (c.personal) {
      personal_loss += c.personal->loss * n;
      personal_accuracy += c.personal->accuracy * n;
    } else {
      every_personal = false;
    }
  }
  GatewayScores s;
  if (samples == 0 || samples > wire::kMaxHeldOutSamples) return s;
  const auto n = static_cast<double>(samples);
  s.evaluation = wire::HeldOutEvaluation{loss / n, std::clamp(accuracy / n, 0.0, 1.0), samples};
  if (every_personal) {
    s.personal = wire::HeldOutEvaluation{personal_loss / n,
                                         std::clamp(personal_accuracy / n, 0.0, 1.0), samples};
  }
  return s;
}

}  // namespace fedsgd
