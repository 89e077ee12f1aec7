// The coordinator's settings: flags and/or a JSON config file, flags winning.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "fedsgd/plan.h"
#include "round_manager.h"

namespace fedsgd {

struct CoordinatorOptions {
  std::string listen = "tcp://127.0.0.1:7070";
  std::string publish = "tcp://127.0.0.1:7071";
  std::string http = "127.0.0.1:8080";
  std::string http_token;           // empty: no authentication
  std::string http_cert, http_key;  // PEM files: HTTPS (both or neither)
  // Allows a non-loopback ZeroMQ bind without CURVE keys and a non-loopback
  // HTTP bind without a token (docs/security.md); logged at every start.
  bool insecure = false;
  // CURVE (docs/security.md): the coordinator's secret key file and the
  // directory of device public keys. Both or neither.
  std::string curve_key;
  std::string authorized_keys;
  std::string db = "fedsgd.db";
  bool new_run = false;
  // A pretrained start (coordinator/initial_model.h); empty: --seed's.
  std::string initial_model;
  bool check_config = false;
  std::string eval_data;
  int heartbeat_ms = 1000;
  // Gateway mode (docs/protocol.md "Gateways"): the root's ROUTER endpoint;
  // empty: a root (or flat) coordinator.
  std::string upstream;
  std::string gateway_id;                         // empty: gateway-HOSTNAME
  std::string upstream_key, upstream_server_key;  // CURVE to the root: both or neither
  // Set by the parser: the plan flags (and --rounds) given on the command
  // line or in --config, which a gateway refuses.
  std::vector<std::string> plan_flags_given;
  // The plan, as flags.
  std::string model = "mlp:784-128-10";
  std::string algorithm = "fedavg";
  double local_epochs = 1;
  long local_steps = 0;
  int batch = 32;
  double lr = 0.05;
  double momentum = 0;
  double weight_decay = 0;
  std::string lr_schedule = "constant";
  double server_lr = 1.0;
  std::uint64_t seed = 1;
  // Differential privacy (plan fields dp_*; docs/aggregation.md).
  double dp_noise_multiplier = 0;
  std::string dp_clip = "1.0";
  double dp_target_quantile = 0.5;
  double dp_clip_lr = 0.2;
  double dp_delta = 1e-5;
  // Aggregation (plan fields too; docs/aggregation.md).
  std::string aggregator = "mean";
  double trim_fraction = 0.1;
  int byzantine = 1;
  int krum_select = 0;
  std::string norm_bound = "adaptive:2";
  double max_device_weight = 0;
  std::string server_optimizer = "sgd";
  double server_momentum = 0.9;
  double server_beta1 = 0.9;
  double server_beta2 = 0.99;
  double server_tau = 1e-3;
  double aggregation_memory_mb = 1024;
  double prox_mu = 0;
  double lr_round_decay = 1;  // Plan::lr_round_decay
  double logit_adjustment = 0;
  double eval_fraction = 0.1;
  std::string update_codec = "fp32";
  // Asynchronous buffered aggregation (Plan::mode).
  bool async = false;
  long buffer = 0;
  long max_staleness = 20;
  std::string staleness_weight = "polynomial:0.5";
  std::string class_weighting = "none";
  long freeze_layers = 0;      // Plan::freeze_layers
  long personalize_steps = 0;  // Plan::personalize_steps
  std::string personalize_layers = "all";
  std::string broadcast_codec = "fp32";
  // Device selection (Plan::clients_per_round / clients_fraction): a count
  // N, or a fraction in (0, 1); "0" = every online device.
  std::string clients_per_round = "0";
  double over_selection = 1.3;
  // Pace steering and flow control (RoundSettings).
  double max_heartbeat_rate = 500;
  std::size_t upload_slots = 64;
  // Rounds.
  std::uint64_t rounds = 10;
  std::size_t min_devices = 1;
  double quorum = 1.0;
  std::size_t min_updates = 1;
  double round_timeout = 60;
  // Limits under abuse (docs/security.md).
  std::size_t max_devices = 10000;
  double max_joins_per_second = 50;
  std::uint64_t max_samples_per_device = 10'000'000;
  double forget_offline_after = 600;

  // Validated plan and round settings; throw fedsgd::Error naming the flag.
  Plan ToPlan() const;
  RoundSettings ToRoundSettings() const;
  // Everything that can be checked without starting: the plan, that the
  // aggregation buffers of --min-devices updates fit --aggregation-memory-mb,
  // endpoints, the HTTP address (a non-loopback one needs --http-token or
  // --insecure), the TLS files, that --eval-data exists, and, when --db
  // exists, that it is a sound fedsgd database; the CURVE keys, and that a
  // non-loopback --listen/--publish has keys or --insecure. Throws
  // fedsgd::Error.
  void Check() const;
  // The CURVE part of Check().
  void CheckSecurity() const;
  // A gateway's part: no plan flags, the upstream endpoint, id and keys.
  void CheckGateway() const;
  bool gateway() const { return !upstream.empty(); }
  // --gateway-id, or gateway-HOSTNAME (made a valid device id).
  std::string GatewayId() const;
  bool curve() const { return !curve_key.empty(); }
  // True when --listen and --publish can only be reached from this machine.
  bool LoopbackOnly() const;
};

// Adds every flag (and --config) to app, bound to options.
void AddCoordinatorOptions(CLI::App& app, CoordinatorOptions& options);
// The plan's flags alone (plan_options.cpp); AddCoordinatorOptions adds them.
void AddPlanOptions(CLI::App& app, CoordinatorOptions& options);

}  // namespace fedsgd
