// Server optimisers (see server_optimizer.h).
#include "server_optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {

ServerOptimizer::ServerOptimizer(const Plan& plan)
    : kind_(plan.server_optimizer),
      lr_(plan.server_lr),
      momentum_(plan.server_momentum),
      beta1_(plan.server_beta1),
      beta2_(plan.server_beta2),
      tau_(plan.server_tau) {
  if (kind_ != "sgd" && kind_ != "momentum" && kind_ != "adam" && kind_ != "yogi" &&
      kind_ != "adagrad")
    throw Error("unknown --server-optimizer '" + kind_ + "'");
}

std::size_t ServerOptimizer::StateSize(std::size_t parameters) const {
  if (kind_ == "sgd") return 0;
  return kind_ == "momentum" ? parameters : 2 * parameters;
}

void ServerOptimizer::CheckState(const ServerState& state, std::size_t parameters) const {
  const auto it = state.find(kStateName);
  if (it == state.end()) return;
  const std::size_t want = StateSize(parameters);
  if (it->second.size() != want) {
    throw Error("the stored server-optimizer state has " + std::to_string(it->second.size()) +
                " values, not the " + std::to_string(want) + " that --server-optimizer " + kind_ +
                " keeps for this model: the database is damaged, or pass --new-run");
  }
}

void ServerOptimizer::Step(std::span<float> params, std::span<const float> aggregate, double scale,
                           ServerState& state) const {
  const std::size_t p = params.size();
  if (kind_ == "sgd") {
    // Today's FedAvg / FedSGD step, as one float factor.
    const auto step = static_cast<float>(scale * lr_);
    for (std::size_t i = 0; i < p; ++i) params[i] += step * aggregate[i];
    return;
  }
  const bool adaptive = kind_ != "momentum";
  CheckState(state, p);
  std::vector<double>& s = state[kStateName];
  if (s.empty()) {
    s.assign(StateSize(p), 0.0);
    if (adaptive) std::fill(s.begin() + static_cast<std::ptrdiff_t>(p), s.end(), tau_ * tau_);
  }
  double* m = s.data();
  if (!adaptive) {
    for (std::size_t i = 0; i < p; ++i) {
      m[i] = momentum_ * m[i] + scale * aggregate[i];
      params[i] = static_cast<float>(params[i] + lr_ * m[i]);
    }
    return;
  }
  double* v = m + p;
  const int rule = kind_ == "adam" ? 0 : kind_ == "yogi" ? 1 : 2;
  for (std::size_t i = 0; i < p; ++i) {
    const double d = scale * aggregate[i];
    const double d2 = d * d;
    m[i] = beta1_ * m[i] + (1 - beta1_) * d;
    if (rule == 0) {
      v[i] = beta2_ * v[i] + (1 - beta2_) * d2;
    } else if (rule == 1) {
      const double diff = v[i] - d2;
      v[i] -= (1 - beta2_) * d2 * static_cast<double>((diff > 0) - (diff < 0));
    } else {
      v[i] += d2;
    }
    params[i] = static_cast<float>(params[i] + lr_ * m[i] / (std::sqrt(v[i]) + tau_));
  }
}

}  // namespace fedsgd
