// The coordinator's flags (see coordinator_options.h).
#include "coordinator_options.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <system_error>

#include "aggregator.h"
#include "checkpoint_store.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/error.h"
#include "fedsgd/json_config.h"
#include "fedsgd/wire.h"
#include "http_api.h"
#include "initial_model.h"
#include "key_store.h"

namespace fedsgd {
namespace {

// CLI11's PositiveNumber / NonNegativeNumber answer a typo with "Value x not
// in range 2.2e-308 to 1.8e308"; these say what is wrong in words.
CLI::Validator SignCheck(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        if (value < 0 || (value == 0 && !zero_allowed)) {
          return std::string("must be ") + (zero_allowed ? ">= 0" : "> 0") + ", not " + text;
        }
        return "";
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
const CLI::Validator kPositive = SignCheck(false);
const CLI::Validator kNonNegative = SignCheck(true);

}  // namespace

void AddCoordinatorOptions(CLI::App& app, CoordinatorOptions& o) {
  AddJsonConfig(app);
  app.add_option("--listen", o.listen, "ZeroMQ ROUTER endpoint daemons connect to")
      ->capture_default_str();
  app.add_option("--publish", o.publish,
                 "ZeroMQ PUB endpoint for model broadcasts (tcp://*:P or tcp://0.0.0.0:P: daemons "
                 "use the host they reached --listen on)")
      ->capture_default_str();
  app.add_option("--http", o.http, "HTTP address for the JSON endpoints, HOST:PORT")
      ->capture_default_str();
  app.add_option(
      "--http-token", o.http_token,
      "Require 'Authorization: Bearer TOKEN' on every HTTP endpoint but /healthz (use it "
      "when --http is not bound to 127.0.0.1; better in a --config file than on the "
      "command line)");
  app.add_option("--http-cert", o.http_cert,
                 "Serve HTTPS with this PEM certificate (chain); needs --http-key");
  app.add_option("--http-key", o.http_key, "PEM private key of --http-cert");
  app.add_flag("--insecure", o.insecure,
               "Allow listening on a non-loopback address without CURVE keys, and serving HTTP "
               "on one without --http-token (a warning is logged at every start)");
  app.add_option("--curve-key", o.curve_key,
                 "Encrypt and authenticate the ZeroMQ sockets with CURVE (ZeroMQ RFC 26): this "
                 "coordinator's secret key file, mode 0600, made by `fedsgd-coordinator keygen` "
                 "(needs --authorized-keys; docs/security.md)");
  app.add_option("--authorized-keys", o.authorized_keys,
                 "With --curve-key: directory of device public keys, one <device-id>.key file per "
                 "device; only these devices may connect, each only as its own id; re-read on "
                 "SIGHUP (systemctl reload)");
  app.add_option("--db", o.db, "SQLite database of runs, rounds and checkpoints")
      ->capture_default_str();
  app.add_flag("--check-config", o.check_config,
               "Check the configuration (flags and --config file) and exit: 0 when it is usable");
  app.add_flag("--new-run", o.new_run,
               "Start a new run even if the database holds one (default: resume it)");
  app.add_option("--eval-data", o.eval_data,
                 "Evaluate each new model on this data (a directory means its t10k-* files)");
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "Daemon heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(50, 60000));

  // Gateways (docs/protocol.md "Gateways").
  app.add_option("--upstream", o.upstream,
                 "Run as a gateway: serve the boards that connect here as a coordinator does, "
                 "and take part in the root coordinator at this ROUTER endpoint (its --listen) "
                 "as one device, forwarding one pre-aggregated update per round. The plan comes "
                 "from the root: plan flags are refused");
  app.add_option("--gateway-id", o.gateway_id,
                 "A gateway's device id at the root (default: gateway-HOSTNAME)");
  app.add_option("--upstream-key", o.upstream_key,
                 "A gateway's CURVE secret key file for the root (from 'keygen'); the root "
                 "enrols its public half as GATEWAY-ID.key");
  app.add_option("--upstream-server-key", o.upstream_server_key,
                 "The root's CURVE public key file (with --upstream-key)");

  const std::size_t plan_first = app.get_options().size();
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
  // The plan's flags (and --rounds): a gateway takes them from its root.
  std::vector<std::string> plan_flags;
  const std::vector<CLI::Option*> all = app.get_options();
  for (std::size_t i = plan_first; i < all.size(); ++i) {
    const std::string name = all[i]->get_name();
    if (name != "--max-heartbeat-rate" && name != "--upload-slots") plan_flags.push_back(name);
  }
  app.final_callback([&app, &o, plan_flags] {
    o.plan_flags_given.clear();
    for (const std::string& name : plan_flags) {
      if (app.count(name) > 0) o.plan_flags_given.push_back(name);
    }
  });
  app.add_option("--min-devices", o.min_devices, "Online devices needed to open a round")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--quorum", o.quorum,
                 "Fraction of a round's online participants whose updates close it early")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--min-updates", o.min_updates, "Updates needed to close a round at its deadline")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--round-timeout", o.round_timeout, "Seconds a round waits for updates")
      ->capture_default_str()
      ->check(kPositive);

  app.add_option("--max-devices", o.max_devices,
                 "Devices known at most; a join beyond it is refused (too_many_devices)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--max-joins-per-second", o.max_joins_per_second,
                 "Joins accepted per second from all peers together, in bursts of up to as many "
                 "(each is answered with the whole model); more are refused (rate_limited)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--max-samples-per-device", o.max_samples_per_device,
                 "Samples a device may declare at join; an update's samples, its weight in the "
                 "mean, may not exceed what its device declared (samples_exceeded)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--forget-offline-after", o.forget_offline_after,
                 "Seconds offline after which a device is forgotten (it joins again when it "
                 "comes back)")
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

void CoordinatorOptions::CheckGateway() const {
  if (!plan_flags_given.empty()) {
    std::string names;
    for (const std::string& n : plan_flags_given) names += (names.empty() ? "" : ", ") + n;
    throw Error(names + (plan_flags_given.size() == 1 ? " is a plan flag" : " are plan flags") +
                ": a gateway (--upstream) serves its root's plan; give " +
                (plan_flags_given.size() == 1 ? "it" : "them") + " to the root coordinator");
  }
  wire::CheckEndpoint(upstream, /*for_bind=*/false);
  if (!wire::ValidDeviceId(GatewayId())) {
    throw Error("--gateway-id '" + GatewayId() +
                "' is not a device id (1..64 of A-Z a-z 0-9 . _ -)");
  }
  if (upstream_key.empty() != upstream_server_key.empty()) {
    throw Error(upstream_key.empty()
                    ? "--upstream-server-key needs --upstream-key (this gateway's secret key file)"
                    : "--upstream-key needs --upstream-server-key (the root's public key file)");
  }
  if (!upstream_key.empty()) {
    if (!curve::Available()) throw Error("--upstream-key: this libzmq was built without CURVE");
    curve::LoadSecretKey(upstream_key);
    curve::LoadPublicKey(upstream_server_key);
  } else if (!curve::IsLoopbackEndpoint(upstream) && !insecure) {
    throw Error("--upstream " + upstream +
                " is on another machine: give --upstream-key and --upstream-server-key to "
                "encrypt and authenticate the link to the root (docs/security.md), or "
                "--insecure to send updates in clear text");
  }
}

std::string CoordinatorOptions::GatewayId() const {
  if (!gateway_id.empty()) return gateway_id;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "gateway";
  std::string id = std::string("gateway-") + host;
  for (char& c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  }
  return id.substr(0, 64);  // the wire's longest device id
}

void CoordinatorOptions::Check() const {
  if (gateway()) CheckGateway();
  const Plan plan = ToPlan();
  // The noise is calibrated to the sum of clipped updates: another rule's
  // sensitivity is not analysed here.
  if (plan.dp() && aggregator != "mean")
    throw Error("--dp-noise-multiplier needs --aggregator mean, not " + aggregator);
  const std::size_t parameters = plan.TrainableParameters();
  // The buffers must hold at least the updates of --min-devices devices
  // (in async mode, of one --buffer; with device selection, of the N
  // updates a round closes with).
  std::size_t held = plan.async() ? std::max<std::size_t>(min_devices, buffer) : min_devices;
  if (plan.selection()) held = std::min(held, plan.SelectionTarget(min_devices));
  const double need = AggregationBufferBytes(plan, held, parameters);
  if (need > aggregation_memory_mb * 1024 * 1024) {
    throw Error("--aggregator " + aggregator + " with --norm-bound " + norm_bound + " buffers " +
                std::to_string(held) +
                (plan.async()       ? " (--min-devices or --buffer)"
                 : plan.selection() ? " (--clients-per-round)"
                                    : " (--min-devices)") +
                " x " + std::to_string(parameters) +
                " parameters x 4 bytes = " + std::to_string(need / 1048576.0) +
                " MiB, more than --aggregation-memory-mb " + std::to_string(aggregation_memory_mb) +
                "; raise the limit, lower --min-devices or --clients-per-round, or use "
                "--aggregator mean with --norm-bound off or fixed:B (they do not buffer)");
  }
  if (min_updates > min_devices) {
    throw Error("--min-updates (" + std::to_string(min_updates) +
                ") cannot exceed --min-devices (" + std::to_string(min_devices) + ")");
  }
  if (min_devices > max_devices) {
    throw Error("--min-devices (" + std::to_string(min_devices) +
                ") cannot exceed --max-devices (" + std::to_string(max_devices) + ")");
  }
  if (!(max_joins_per_second > 0) || !(forget_offline_after > 0) || max_samples_per_device == 0) {
    throw Error(
        "--max-joins-per-second, --forget-offline-after and --max-samples-per-device must be > 0");
  }
  wire::CheckEndpoint(listen, /*for_bind=*/true);
  wire::CheckEndpoint(publish, /*for_bind=*/true);
  // Two binds of "HOST:*" get two free ports; any other repeat cannot bind.
  if (listen == publish && !listen.ends_with(":*"))
    throw Error("--listen and --publish must differ");
  CheckSecurity();
  const std::string http_host = ParseHostPort(http).first;
  if (!IsLoopbackHost(http_host) && http_token.empty() && !insecure) {
    throw Error("--http " + http +
                " is reachable from other hosts: give --http-token (and "
                "--http-cert/--http-key), or --insecure to serve it without authentication");
  }
  CheckTlsFiles({http_cert, http_key});
  namespace fs = std::filesystem;
  if (!eval_data.empty() && !fs::exists(eval_data))
    throw Error("--eval-data " + eval_data + ": no such file or directory");
  const fs::path parent = fs::absolute(db).parent_path();
  if (!fs::is_directory(parent))
    throw Error("--db " + db + ": directory " + parent.string() + " does not exist");
  if (fs::exists(db)) CheckpointStore::Open(db, /*read_only=*/true);
}

bool CoordinatorOptions::LoopbackOnly() const {
  return curve::IsLoopbackEndpoint(listen) && curve::IsLoopbackEndpoint(publish);
}

void CoordinatorOptions::CheckSecurity() const {
  if (curve_key.empty() != authorized_keys.empty()) {
    throw Error(curve_key.empty()
                    ? "--authorized-keys needs --curve-key (this coordinator's secret key file)"
                    : "--curve-key needs --authorized-keys (the directory of device public keys)");
  }
  if (curve()) {
    if (!curve::Available()) throw Error("--curve-key: this libzmq was built without CURVE");
    curve::LoadSecretKey(curve_key);
    ReadAuthorizedKeys(authorized_keys);
  } else if (!LoopbackOnly() && !insecure) {
    throw Error("--listen " + listen + " / --publish " + publish +
                " can be reached from other machines: give --curve-key and --authorized-keys to "
                "encrypt and authenticate the fleet (docs/security.md), or --insecure to accept "
                "anyone's updates in clear text");
  }
}

RoundSettings CoordinatorOptions::ToRoundSettings() const {
  RoundSettings s;
  s.rounds = rounds;
  s.min_devices = min_devices;
  s.quorum = quorum;
  s.min_updates = min_updates;
  s.round_timeout = round_timeout;
  s.max_devices = max_devices;
  s.forget_offline_after = forget_offline_after;
  // Three missed heartbeats, and never less than 3 s (a busy board may be late).
  s.heartbeat_timeout = std::max(3.0, 3.0 * heartbeat_ms / 1000.0);
  s.max_heartbeat_rate = max_heartbeat_rate;
  s.upload_slots = upload_slots;
  return s;
}

}  // namespace fedsgd
