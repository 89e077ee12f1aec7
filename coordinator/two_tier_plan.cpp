// Two-tier plans (see two_tier_plan.h).
#include "two_tier_plan.h"

namespace fedsgd {

std::optional<std::string> TwoTierProblem(const Plan& p) {
  if (p.aggregator != "mean") {
    return "the root aggregates with --aggregator " + p.aggregator +
           ": a gateway forwards the weighted mean of its boards' updates, and only the mean "
           "is the same computed in two tiers (median, trimmed_mean, krum and multi_krum need "
           "every board's update in one place); run the root with --aggregator mean, or the "
           "boards in a flat fleet";
  }
  if (p.dp()) {
    return "the root uses differential privacy (--dp-noise-multiplier), which clips each "
           "device's update and calibrates noise to one device: behind a gateway it would see "
           "sums of boards";
  }
  if (p.async()) {
    return "the root runs asynchronous rounds (--async): a gateway forwards one update per "
           "synchronous round";
  }
  if (p.selection()) {
    return "the root selects devices per round (--clients-per-round): a gateway's boards are "
           "not selectable one by one at the root";
  }
  if (p.update_codec != "fp32") {
    return "the root's plan has --update-codec " + p.update_codec +
           ": a gateway forwards float32 means; a two-tier plan needs --update-codec fp32";
  }
  if (p.max_device_weight > 0) {
    return "the root caps an update's weight (--max-device-weight): at the root it would cap a "
           "whole gateway's boards together";
  }
  return std::nullopt;
}

Plan GatewayRoundPlan(const Plan& root) {
  Plan p = root;
  p.server_optimizer = "sgd";
  p.server_lr = 1.0;
  return p;
}

}  // namespace fedsgd
