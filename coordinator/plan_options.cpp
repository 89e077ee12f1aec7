// The coordinator's plan flags (the training plan every device follows,
// fedsgd/plan.h) and the Plan they make; the other flags and the checks
// across them are in coordinator_options.cpp.
#include <CLI/CLI.hpp>
#include <charconv>
#include <system_error>

#include "aggregator.h"
#include "cli_checks.h"
#include "coordinator_options.h"
#include "fedsgd/error.h"
#include "fedsgd/wire.h"
#include "initial_model.h"

namespace fedsgd {

void AddPlanOptions(CLI::App& app, CoordinatorOptions& o) {
  app.add_option("--model", o.model,
                 "Architecture, e.g. mlp:784-128-10, softmax:784-10, "
                 "cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10")
      ->capture_default_str();
  app.add_option("--algorithm", o.algorithm,
                 "fedavg (local epochs, model deltas) or fedsgd "
                 "(one full-shard gradient per round)")
      ->capture_default_str()
      ->check(CLI::IsMember({"fedavg", "fedsgd"}));
  app.add_option("--local-epochs", o.local_epochs, "FedAvg: local epochs per round")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--local-steps", o.local_steps,
                 "FedAvg: at most this many local mini-batches per round (0: no limit)")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--batch", o.batch, "Local mini-batch size")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--lr", o.lr, "Local learning rate")->capture_default_str()->check(kPositive);
  app.add_option("--momentum", o.momentum, "Local SGD momentum")->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "Local L2 regularisation")
      ->capture_default_str();
  app.add_option("--lr-schedule", o.lr_schedule,
                 "Within a round, over local steps: constant, step:S:G, exp:G or inv:G[:P]")
      ->capture_default_str();
  app.add_option("--lr-round-decay", o.lr_round_decay,
                 "Over rounds: devices train round r with --lr x G^(r-1), G in (0, 1]; a "
                 "decaying rate is what FedAvg needs to converge (Li et al. 2020, On the "
                 "Convergence of FedAvg on Non-IID Data); 1 = off")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0) & kPositive);
  app.add_option("--server-lr", o.server_lr, "Server learning rate (1.0 = plain FedAvg)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--seed", o.seed, "Seed of the initial model")->capture_default_str();
  app.add_option("--initial-model", o.initial_model,
                 "Start a new run from pretrained weights instead of --seed's: FILE.npy (as "
                 "/v1/model?format=npy serves; numpy.save of a float32 vector) or another "
                 "coordinator's database as DB, DB:ROUND or DB:RUN:ROUND (its newest run and "
                 "round by default); checked against --model. Part of the plan, by SHA-256");
  app.add_option("--prox-mu", o.prox_mu,
                 "FedAvg: FedProx proximal term mu, local loss + mu/2 ||w - w_global||^2 (Li et "
                 "al. 2020, Federated Optimization in Heterogeneous Networks); 0 = off")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--logit-adjustment", o.logit_adjustment,
                 "Label skew: devices train softmax models on logits + TAU * log(their class "
                 "prior) (logit adjustment, Menon et al. 2021; FedLC, Zhang et al. 2022); 0 = off, "
                 "at most 10")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--class-weighting", o.class_weighting,
                 "Class imbalance: none, or inverse_frequency (devices weight each sample's "
                 "cross-entropy by 1 / its class's count in their training part, normalised to "
                 "mean 1 over the classes present; cost-sensitive weighting as in Cui et al. "
                 "2019, Class-Balanced Loss); softmax models, fedavg")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "inverse_frequency"}));
  app.add_option("--freeze-layers", o.freeze_layers,
                 "Fine-tuning: freeze the first K layers with parameters (a cnn's convolutions, "
                 "then dense layers; one at least stays trainable): devices neither train nor "
                 "send them, updates carry only the rest (Yosinski et al. 2014, How transferable "
                 "are features in deep neural networks?); usually with --initial-model; 0 = off")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--personalize-steps", o.personalize_steps,
                 "Personalisation by local adaptation: after each new global model a device "
                 "fine-tunes a copy for S mini-batches of its own data, scores both on its "
                 "held-out part (--eval-fraction) and reports both; rounds record the mean "
                 "global and personalised accuracy and the share made worse (Wang et al. 2019, "
                 "arXiv:1910.10252); 0 = off")
      ->capture_default_str()
      ->check(CLI::Range(0L, 1000000L));
  app.add_option("--personalize-layers", o.personalize_layers,
                 "What personalisation fine-tunes: all layers, or only the last")
      ->capture_default_str()
      ->check(CLI::IsMember({"all", "last"}));
  app.add_option("--eval-fraction", o.eval_fraction,
                 "Share of each device's shard held out for federated evaluation of every global "
                 "model (loss, accuracy, fairness over devices); 0 = off, at most 0.5")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.5));
  app.add_option("--update-codec", o.update_codec,
                 "How daemons compress updates on the wire: fp32; fp16 (IEEE 754 binary16); int8 "
                 "(a scale per 256 values, stochastic rounding: QSGD, Alistarh et al. 2017); "
                 "topk:F (the largest F of the entries, 0 < F <= 1, with error feedback: Stich "
                 "et al. 2018, Sparsified SGD with memory; Lin et al. 2018, Deep Gradient "
                 "Compression)")
      ->capture_default_str();
  app.add_flag("--async", o.async,
               "Asynchronous rounds: devices train continuously and every --buffer updates, "
               "weighted by staleness, make a new model version (FedBuff, Nguyen et al. 2022, "
               "Federated Learning with Buffered Asynchronous Aggregation); default: synchronous "
               "rounds that wait for their quorum or deadline");
  app.add_option("--buffer", o.buffer,
                 "async: updates buffered per model version, K (FedBuff); 0 = half the devices "
                 "online when the buffer opens, at least --min-updates")
      ->capture_default_str()
      ->check(CLI::Range(0L, 1000000L));
  app.add_option("--max-staleness", o.max_staleness,
                 "async: an update trained from a model more than this many versions old is "
                 "refused (stale_round)")
      ->capture_default_str()
      ->check(CLI::Range(0L, 1000000L));
  app.add_option("--staleness-weight", o.staleness_weight,
                 "async: weight of an update s versions old: polynomial:A = (1+s)^-A (FedBuff; "
                 "Xie et al. 2019, Asynchronous Federated Optimization), hinge:A:B = 1 up to B, "
                 "then 1/(A(s-B)+1) (Xie et al. 2019), or constant")
      ->capture_default_str();
  app.add_option("--clients-per-round", o.clients_per_round,
                 "Device selection: a round is opened for --over-selection x N devices drawn "
                 "uniformly at random (seeded by --seed, logged) among those online and closes "
                 "with N updates; the others are told they are not selected. N is a count, or a "
                 "fraction of the online devices when written with a point (0.1); 0 = every "
                 "online device takes part (Bonawitz et al. 2019, Towards Federated Learning at "
                 "Scale)")
      ->capture_default_str();
  app.add_option("--over-selection", o.over_selection,
                 "Device selection: devices invited per round, as a multiple of "
                 "--clients-per-round, so that dropouts do not stall it (1.3 in Bonawitz et al. "
                 "2019)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 10.0));
  app.add_option("--max-heartbeat-rate", o.max_heartbeat_rate,
                 "Pace steering: heartbeats per second the coordinator asks of its idle "
                 "devices in all; with more devices than this x --heartbeat-ms / 1000 the "
                 "interval each is told to come back after grows with the fleet (a device "
                 "training a round keeps --heartbeat-ms)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--upload-slots", o.upload_slots,
                 "Flow control with device selection: updates the coordinator lets devices "
                 "send at once; a device with an update asks first and is told to come back "
                 "while the slots are taken, so the coordinator's memory does not grow with "
                 "the round's size")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--broadcast-codec", o.broadcast_codec,
                 "How the coordinator sends the model to daemons (broadcasts, fetches, welcomes): "
                 "fp32, or fp16 (IEEE 754 binary16, half the bytes; the devices then train from "
                 "the fp16-rounded model, while the coordinator keeps fp32 weights as the truth)")
      ->capture_default_str();

  app.add_option("--dp-noise-multiplier", o.dp_noise_multiplier,
                 "Differential privacy (DP-FedAvg, McMahan et al. 2018, arXiv:1710.06963): "
                 "Gaussian noise of std Z x clip on the sum of the clipped updates; 0 = off")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--dp-clip", o.dp_clip,
                 "DP: L2 clip norm of each device's update, or 'adaptive[:INITIAL]' to follow "
                 "--dp-target-quantile of the norms (Andrew et al. 2021, arXiv:1905.03871; "
                 "initial 0.1)")
      ->capture_default_str();
  app.add_option("--dp-target-quantile", o.dp_target_quantile,
                 "DP, adaptive clip: the fraction of updates left unclipped")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--dp-clip-lr", o.dp_clip_lr,
                 "DP, adaptive clip: geometric step eta, clip *= exp(-eta (unclipped - quantile))")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--dp-delta", o.dp_delta,
                 "DP: the delta of the reported (epsilon, delta), by RDP accounting (Mironov "
                 "2017, arXiv:1702.07476)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--aggregator", o.aggregator,
                 "Aggregation rule: mean (sample-weighted, McMahan et al. 2017), median or "
                 "trimmed_mean (coordinate-wise, Yin et al. 2018), krum or multi_krum (Blanchard "
                 "et al. 2017); all but mean buffer N x P floats (docs/aggregation.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"mean", "median", "trimmed_mean", "krum", "multi_krum"}));
  app.add_option("--trim-fraction", o.trim_fraction,
                 "trimmed_mean: fraction of values cut at each end, per coordinate, in [0, 0.5) "
                 "(Yin et al. 2018)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.4999999));
  app.add_option("--byzantine", o.byzantine,
                 "krum / multi_krum: attackers assumed, f; needs more than 2f + 2 updates a round "
                 "(Blanchard et al. 2017)")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--krum-select", o.krum_select,
                 "multi_krum: updates averaged, m; 0 = n - f (Blanchard et al. 2017)")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--norm-bound", o.norm_bound,
                 "L2 bound on each update: off, fixed:B, or adaptive:K = K x the previous round's "
                 "median update norm (the first round: its own); bounds what one device can move "
                 "the model (docs/aggregation.md)")
      ->capture_default_str();
  app.add_option("--max-device-weight", o.max_device_weight,
                 "Cap on one update's weight (its sample count) in the mean; 0 = none")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--server-optimizer", o.server_optimizer,
                 "How the aggregate is applied: sgd (FedAvg, McMahan et al. 2017), momentum "
                 "(FedAvgM, Hsu et al. 2019), adam, yogi or adagrad (Reddi et al. 2021, Adaptive "
                 "Federated Optimization)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "momentum", "adam", "yogi", "adagrad"}));
  app.add_option("--server-momentum", o.server_momentum,
                 "momentum: server momentum in [0, 1) (FedAvgM, Hsu et al. 2019)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9999999));
  app.add_option("--server-beta1", o.server_beta1,
                 "adam / yogi / adagrad: first-moment decay in [0, 1) (Reddi et al. 2021)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9999999));
  app.add_option("--server-beta2", o.server_beta2,
                 "adam / yogi: second-moment decay in [0, 1) (Reddi et al. 2021)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9999999));
  app.add_option("--server-tau", o.server_tau,
                 "adam / yogi / adagrad: adaptivity tau > 0 (Reddi et al. 2021)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--aggregation-memory-mb", o.aggregation_memory_mb,
                 "Limit on the buffers of median / trimmed_mean / krum / multi_krum and of the "
                 "first round of adaptive norm bounding (N x P x 4 bytes each); a round whose "
                 "buffer is full closes with what it has")
      ->capture_default_str()
      ->check(kPositive);

  app.add_option("--rounds", o.rounds, "Rounds to run; the coordinator exits after the last")
      ->capture_default_str()
      ->check(kPositive);
}

Plan CoordinatorOptions::ToPlan() const {
  Plan p;
  p.model = Architecture::Parse(model).ToString();
  p.algorithm = ParseAlgorithm(algorithm);
  p.local_epochs = local_epochs;
  p.local_steps = local_steps;
  p.batch = batch;
  p.sgd.lr = static_cast<float>(lr);
  p.sgd.momentum = static_cast<float>(momentum);
  p.sgd.weight_decay = static_cast<float>(weight_decay);
  p.sgd.schedule = LrSchedule::Parse(lr_schedule);
  p.server_lr = server_lr;
  p.seed = seed;
  p.dp_noise_multiplier = dp_noise_multiplier;
  const DpClip clip = ParseDpClip(dp_clip);
  p.dp_clip = clip.clip;
  p.dp_adaptive_clip = clip.adaptive;
  p.dp_target_quantile = dp_target_quantile;
  p.dp_clip_lr = dp_clip_lr;
  p.dp_delta = dp_delta;
  p.aggregator = aggregator;
  p.trim_fraction = trim_fraction;
  p.byzantine = byzantine;
  p.krum_select = krum_select;
  p.norm_bound = norm_bound;
  p.max_device_weight = max_device_weight;
  p.server_optimizer = server_optimizer;
  p.server_momentum = server_momentum;
  p.server_beta1 = server_beta1;
  p.server_beta2 = server_beta2;
  p.server_tau = server_tau;
  p.aggregation_memory_mb = aggregation_memory_mb;
  p.prox_mu = prox_mu;
  p.lr_round_decay = lr_round_decay;
  p.logit_adjustment = logit_adjustment;
  p.eval_fraction = eval_fraction;
  p.update_codec = update_codec;
  p.mode = async ? "async" : "sync";
  p.async_buffer = buffer;
  p.max_staleness = max_staleness;
  p.staleness_weight = staleness_weight;
  p.class_weighting = class_weighting;
  p.freeze_layers = freeze_layers;
  p.personalize_steps = personalize_steps;
  p.personalize_layers = personalize_layers;
  p.broadcast_codec = broadcast_codec;
  p.over_selection = over_selection;
  if (clients_per_round.find_first_of(".eE") == std::string::npos) {
    long n = -1;
    const char* end = clients_per_round.data() + clients_per_round.size();
    const auto r = std::from_chars(clients_per_round.data(), end, n);
    if (r.ec != std::errc{} || r.ptr != end || n < 0) {
      throw Error("--clients-per-round '" + clients_per_round +
                  "' is not a count (N >= 0) or a fraction in (0, 1)");
    }
    p.clients_per_round = n;
  } else {
    double f = -1;
    const char* end = clients_per_round.data() + clients_per_round.size();
    const auto r = std::from_chars(clients_per_round.data(), end, f);
    if (r.ec != std::errc{} || r.ptr != end || !(f > 0 && f <= 1)) {
      throw Error("--clients-per-round '" + clients_per_round +
                  "' is not a count (N >= 0) or a fraction in (0, 1]");
    }
    p.clients_fraction = f;
  }
  if (!initial_model.empty()) {
    const InitialModel m = LoadInitialModel(initial_model, Architecture::Parse(p.model));
    p.initial_model = m.source;
    p.initial_model_sha256 = m.sha256;
  }
  p.Validate();
  return p;
}

}  // namespace fedsgd
