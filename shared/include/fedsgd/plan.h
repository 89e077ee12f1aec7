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
// Aggregation (docs/aggregation.md): the rule that combines a round's
// updates (aggregator), the bound on each update's L2 norm (norm_bound) and
// weight (max_device_weight), and the server optimiser that applies the
// aggregate (server_optimizer). Plans stored before these fields existed
// read as their defaults.
//
// Differential privacy (dp_*, off while dp_noise_multiplier is 0): the
// coordinator clips each update, adds Gaussian noise to the aggregate and
// accounts (epsilon, delta); see coordinator/dp_aggregator.h and
// docs/aggregation.md. The dp_* keys appear in the JSON only when it is on,
// so the plans of runs without it read as they did before.
//
// Device-side options (issue 9):
//   lr_round_decay  G in (0, 1]: a device trains round r with
//                  lr * G^(r - 1), a learning rate that decays over rounds
//                  as FedAvg's convergence on non-iid data needs (Li et al.
//                  2020, "On the Convergence of FedAvg on Non-IID Data");
//                  lr_schedule acts within a round on top. 1 = off; in the
//                  JSON only when on.
//   prox_mu        FedProx (Li et al. 2020, "Federated Optimization in
//                  Heterogeneous Networks"): local training minimises
//                  loss + prox_mu/2 ||w - w_global||^2; 0 = plain FedAvg.
//   eval_fraction  share of each device's shard held out (never trained on)
//                  to evaluate every global model it receives: federated
//                  evaluation. 0 = off.
//   logit_adjustment  tau of logit adjustment for label skew (Menon et al.
//                  2021; FedLC, Zhang et al. 2022; see TrainOptions in
//                  trainer.h): devices train on logits + tau * log(their
//                  class prior). 0 = off; in the JSON only when on.
//   class_weighting  none | inverse_frequency: devices weight each sample's
//                  cross-entropy by the inverse frequency of its class in
//                  their training part (normalised to mean 1 over the
//                  classes present; Cui et al. 2019 as background). Local
//                  training (fedavg) of softmax models; in the JSON only
//                  when not none.
// FromJson accepts a plan without these keys (written before they existed)
// and gives them their defaults.
//
// Update codec (issue 10): update_codec says how daemons compress their
// updates on the wire (fp32 | fp16 | int8 | topk:F, see update_codec.h);
// the key appears in the JSON only when it is not fp32, so the plans of
// runs without compression read and compare as they did before.
//
// Asynchronous buffered aggregation (issue 10; FedBuff, Nguyen et al. 2022):
// mode "async" lets devices train continuously; the coordinator weights
// each update by staleness_weight (fedsgd/staleness.h) of its staleness,
// refuses those more than max_staleness versions old, and applies the
// buffered mean every async_buffer updates (0: half the devices online when
// the buffer opens). docs/protocol.md "Asynchronous mode". The async_* keys
// and mode appear in the JSON only for an async plan, so synchronous plans
// read and compare as they did before.
//
// broadcast_codec says how the coordinator sends weights to daemons
// (fp32 | fp16, see broadcast_codec.h): in the JSON only when not fp32.
//
// Device selection (issue 11; Bonawitz et al. 2019, "Towards Federated
// Learning at Scale"): with clients_per_round N > 0 (or clients_fraction F
// in (0, 1]: N = ceil(F x devices online)) a synchronous round is opened
// for ceil(over_selection x N) devices drawn uniformly at random among the
// online ones (seeded by seed, run and round: reproducible and logged) and
// closes at N updates; the others are told they are not selected and
// updates from them are refused (not_selected). docs/protocol.md "Device
// selection". The three keys appear in the JSON only when selection is on.
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
  double lr_round_decay = 1;
  double eval_fraction = 0.1;
  double logit_adjustment = 0;
  std::string update_codec = "fp32";     // fp32 | fp16 | int8 | topk:F
  std::string broadcast_codec = "fp32";  // fp32 | fp16

  // DP-FedAvg (McMahan et al. 2018); noise multiplier 0 = off.
  double dp_noise_multiplier = 0;
  double dp_clip = 1.0;           // the clip norm C, or the initial C when adaptive
  bool dp_adaptive_clip = false;  // Andrew et al. 2021
  double dp_target_quantile = 0.5;
  double dp_clip_lr = 0.2;
  double dp_delta = 1e-5;

  bool dp() const { return dp_noise_multiplier > 0; }

  // Aggregation at the coordinator (docs/aggregation.md).
  std::string aggregator = "mean";        // mean | median | trimmed_mean | krum | multi_krum
  double trim_fraction = 0.1;             // trimmed_mean: fraction cut at each end, [0, 0.5)
  int byzantine = 1;                      // krum / multi_krum: assumed attackers f
  int krum_select = 0;                    // multi_krum: updates averaged, 0 = n - f
  std::string norm_bound = "adaptive:2";  // off | fixed:B | adaptive:K
  double max_device_weight = 0;           // cap on one update's weight, 0 = none
  std::string server_optimizer = "sgd";   // sgd | momentum | adam | yogi | adagrad
  double server_momentum = 0.9;
  double server_beta1 = 0.9;
  double server_beta2 = 0.99;
  double server_tau = 1e-3;
  double aggregation_memory_mb = 1024;  // buffer limit of the buffering rules
  // Device-side class weighting of the cross-entropy (ClassWeighting in
  // trainer.h): none | inverse_frequency.
  std::string class_weighting = "none";

  // Asynchronous mode (FedBuff). "sync" (the default) is the round protocol.
  std::string mode = "sync";                        // sync | async
  long async_buffer = 0;                            // K updates per model step; 0 = auto
  long max_staleness = 20;                          // versions; older updates are refused
  std::string staleness_weight = "polynomial:0.5";  // see fedsgd/staleness.h

  bool async() const { return mode == "async"; }
  // Device selection (synchronous rounds): 0 and 0 = every online device.
  long clients_per_round = 0;   // N devices a round closes with
  double clients_fraction = 0;  // or N = ceil(this x online), in (0, 1]
  double over_selection = 1.3;  // devices invited per round: ceil(this x N), in [1, 10]
  bool selection() const { return clients_per_round > 0 || clients_fraction > 0; }
  // N for `online` devices (selection() plans; at least 1).
  std::size_t SelectionTarget(std::size_t online) const;

  // Pretrained start (the coordinator's --initial-model): the source round
  // 0's weights were read from (a .npy file or DB[:RUN]:ROUND) and the
  // SHA-256 of their float32 bytes, so that other weights make another plan
  // (refused on resume without --new-run). Both empty: seeded He/Glorot.
  std::string initial_model;
  std::string initial_model_sha256;

  // Fine-tuning: the first freeze_layers layers with parameters (a cnn's
  // convolutions first, then the dense layers; at least one stays
  // trainable) are frozen. Their parameters, the first FrozenParameters()
  // of the flat vector, are neither trained on devices nor sent: an Update
  // carries the TrainableParameters() after them, and the coordinator
  // aggregates and steps only those.
  long freeze_layers = 0;
  std::size_t FrozenParameters() const;
  std::size_t TrainableParameters() const;

  // Personalisation by local adaptation (Wang et al. 2019, "Federated
  // Evaluation of On-Device Personalization", arXiv:1910.10252): with
  // personalize_steps S > 0 a device fine-tunes a copy of every new global
  // model for S mini-batches of its own training part, `all` layers or only
  // the `last`, scores both on its held-out part (needs eval_fraction > 0)
  // and reports both. The global model's training is unchanged.
  long personalize_steps = 0;
  std::string personalize_layers = "all";  // all | last
  bool personalize() const { return personalize_steps > 0; }
  // Parameters a personalisation step leaves alone: the frozen ones, or
  // with `last` all but the last layer's.
  std::size_t PersonalFrozenParameters() const;

  // The learning rate a device trains round `round` (1, 2, ...) with:
  // sgd.lr * lr_round_decay^(round - 1).
  float RoundLr(std::uint64_t round) const;

  Architecture architecture() const { return Architecture::Parse(model); }

  // Checks every field (model text, ranges); throws fedsgd::Error naming the
  // field and the value.
  void Validate() const;
  nlohmann::json ToJson() const;
  // Throws fedsgd::Error for a missing or mistyped field.
  static Plan FromJson(const nlohmann::json& j);
};

// The parsed form of Plan::norm_bound.
struct NormBound {
  enum class Kind { kOff, kFixed, kAdaptive };
  Kind kind = Kind::kOff;
  double value = 0;  // B for fixed, K for adaptive
  // "off", "fixed:B" (B > 0) or "adaptive:K" (K > 0); throws Error naming
  // --norm-bound and the text.
  static NormBound Parse(const std::string& text);
};

Algorithm ParseAlgorithm(const std::string& text);  // "fedavg" | "fedsgd"; throws Error
std::string ToString(Algorithm algorithm);

// --dp-clip: "C" (a fixed clip norm), "adaptive" (initial C 0.1, as Andrew
// et al. 2021 start) or "adaptive:C0". Throws Error naming the flag.
struct DpClip {
  double clip = 1.0;
  bool adaptive = false;
};
constexpr double kDefaultAdaptiveInitialClip = 0.1;
DpClip ParseDpClip(const std::string& text);

}  // namespace fedsgd
