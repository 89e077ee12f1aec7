// The held-out scores a gateway forwards with its round's update
// (docs/protocol.md "Gateways"): its boards' federated evaluation and, with
// personalisation, their personalised copies' scores, each weighted by the
// boards' held-out samples, as the root would weight the boards one by one.
#pragma once

#include <optional>
#include <vector>

#include "checkpoint_store.h"
#include "fedsgd/wire.h"

namespace fedsgd {

struct GatewayScores {
  std::optional<wire::HeldOutEvaluation> evaluation;  // over the boards that evaluated
  // Over the same boards and samples as evaluation: present only when every
  // board that evaluated also reported a personalised score (the root
  // compares the two as it compares a device's).
  std::optional<wire::HeldOutEvaluation> personal;
};

GatewayScores CombineBoardScores(const std::vector<DeviceContribution>& boards);

}  // namespace fedsgd
