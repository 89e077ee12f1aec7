// Plan: the training plan a coordinator owns and sends to every daemon.
//
// A board's own config says only where to connect, who it is, where its data
// is and how many threads to use; everything about *how* to train comes from
// the plan in the coordinator's welcome. The plan is also stored with each
// run in SQLite: a coordinator restarted with a different plan on the same
// database refuses to mix them.
//
// Algorithms:
//   fedavg  each device runs local_epochs of SGD from the global model and
//           sends the model difference (delta); the coordinator adds the
//           sample-weighted mean delta times server_lr.
//   fedsgd  each device sends the gradient of its whole shard at the global
//           model; the coordinator steps by -lr * server_lr * mean gradient.
//
// Device-side options (issue 9):
//   prox_mu        FedProx (Li et al. 2020, "Federated Optimization in
//                  Heterogeneous Networks"): local training minimises
//                  loss + prox_mu/2 ||w - w_global||^2; 0 = plain FedAvg.
//   eval_fraction  share of each device's shard held out (never trained on)
//                  to evaluate every global model it receives: federated
//                  evaluation. 0 = off.
// FromJson accepts a plan without these keys (written before they existed)
// and gives them their defaults.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "fedsgd/model.h"
#include "fedsgd/optimizer.h"

namespace fedsgd {

enum class Algorithm { kFedAvg, kFedSgd };

struct Plan {
  std::string model = "mlp:784-128-10";
  Algorithm algorithm = Algorithm::kFedAvg;
  double local_epochs = 1;
  long local_steps = 0;  // > 0: at most this many mini-batches per round
  int batch = 32;
  SgdOptions sgd;
  double server_lr = 1.0;
  std::uint64_t seed = 1;
  double prox_mu = 0;
  double eval_fraction = 0.1;

  Architecture architecture() const { return Architecture::Parse(model); }

  // Checks every field (model text, ranges); throws fedsgd::Error naming the
  // field and the value.
  void Validate() const;
  nlohmann::json ToJson() const;
  // Throws fedsgd::Error for a missing or mistyped field.
  static Plan FromJson(const nlohmann::json& j);
};

Algorithm ParseAlgorithm(const std::string& text);  // "fedavg" | "fedsgd"; throws Error
std::string ToString(Algorithm algorithm);

}  // namespace fedsgd
