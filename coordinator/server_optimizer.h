// ServerOptimizer: applies a round's aggregate to the global model.
//
// The aggregate is a pseudo-gradient delta (Reddi et al. 2021, "Adaptive
// Federated Optimization", Algorithm 2): for fedavg the aggregated model
// difference, for fedsgd -lr x the aggregated gradient. With delta d,
// server lr eta and state m (first moment), v (second moment):
//   sgd       w += eta d                              (FedAvg, McMahan et al. 2017)
//   momentum  m = mu m + d;  w += eta m               (FedAvgM, Hsu et al. 2019)
//   adam      m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2
//   yogi      m as adam;  v = v - (1 - b2) d^2 sign(v - d^2)
//   adagrad   m as adam;  v = v + d^2
//             (the three:) w += eta m / (sqrt(v) + tau)
// m starts at 0 and v at tau^2, as in the paper; no bias correction (the
// paper has none). Moments are kept in double, so a resumed run continues
// bit-exactly.
//
// Stateless itself: the moments live in ServerState under "server_optimizer"
// ([m..., v...]: P doubles for momentum, 2 x P for adam / yogi / adagrad,
// none for sgd). Step updates a copy that RoundManager commits with the
// weights. Throws fedsgd::Error when a stored state has the wrong size (a
// damaged database, or a model of another size). Thread-safe (const).
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "fedsgd/plan.h"
#include "server_state.h"

namespace fedsgd {

class ServerOptimizer {
 public:
  explicit ServerOptimizer(const Plan& plan);
  const std::string& name() const { return kind_; }
  // params += the step for aggregate x scale (scale: 1 for fedavg deltas,
  // -lr for fedsgd gradients), updating state's entry.
  void Step(std::span<float> params, std::span<const float> aggregate, double scale,
            ServerState& state) const;

  // Doubles of state kept for a model of `parameters` floats.
  std::size_t StateSize(std::size_t parameters) const;
  // Throws fedsgd::Error when state holds an entry of the wrong size.
  void CheckState(const ServerState& state, std::size_t parameters) const;

  static constexpr const char* kStateName = "server_optimizer";

 private:
  std::string kind_;
  double lr_, momentum_, beta1_, beta2_, tau_;
};

}  // namespace fedsgd
