// The coordinator's settings: flags and/or a JSON config file, flags winning.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "fedsgd/plan.h"
#include "round_manager.h"

namespace fedsgd {

struct CoordinatorOptions {
  std::string listen = "tcp://127.0.0.1:7070";
  std::string publish = "tcp://127.0.0.1:7071";
  std::string http = "127.0.0.1:8080";
  std::string http_token;  // empty: no authentication
  // Allows a non-loopback ZeroMQ bind without CURVE keys and a non-loopback
  // HTTP bind without a token (docs/security.md); logged at every start.
  bool insecure = false;
  std::string db = "fedsgd.db";
  bool new_run = false;
  bool check_config = false;
  std::string eval_data;
  int heartbeat_ms = 1000;
  std::string aggregator = "mean";
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
  double prox_mu = 0;
  double eval_fraction = 0.1;
  // Rounds.
  std::uint64_t rounds = 10;
  std::size_t min_devices = 1;
  double quorum = 1.0;
  std::size_t min_updates = 1;
  double round_timeout = 60;

  // Validated plan and round settings; throw fedsgd::Error naming the flag.
  Plan ToPlan() const;
  RoundSettings ToRoundSettings() const;
  // Everything that can be checked without starting: the plan, endpoints,
  // the HTTP address, that --eval-data exists, and, when --db exists, that it
  // is a sound fedsgd database. Throws fedsgd::Error.
  void Check() const;
};

// Adds every flag (and --config) to app, bound to options.
void AddCoordinatorOptions(CLI::App& app, CoordinatorOptions& options);

}  // namespace fedsgd
