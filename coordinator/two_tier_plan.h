// Which plans a two-tier federation (a root, gateways, their boards;
// docs/protocol.md "Gateways") can run exactly as a flat one.
//
// A gateway forwards the sample-weighted mean of its boards' updates with
// their samples in all, so the root's sample-weighted mean over gateways is
// the flat fleet's mean over boards, and the root's server optimiser
// (FedAvg, FedAvgM, Adam...) steps from the same mean. Rules that need every
// update in one place (median, trimmed mean, Krum), per-device noise and
// clipping (DP), per-update weight caps, asynchronous buffers, device
// selection and lossy update codecs do not decompose that way: such a plan
// is refused with the reason.
#pragma once

#include <optional>
#include <string>

#include "fedsgd/plan.h"

namespace fedsgd {

// Why a gateway cannot serve this plan; nullopt when it can.
std::optional<std::string> TwoTierProblem(const Plan& plan);

// The plan a gateway's own rounds aggregate with: the root's, but with the
// plain server step (sgd, server_lr 1), since the gateway forwards its
// aggregate and the root applies its own optimiser.
Plan GatewayRoundPlan(const Plan& root);

}  // namespace fedsgd
