// The coordinator's flags (see coordinator_options.h).
#include "coordinator_options.h"

#include <algorithm>
#include <filesystem>

#include "checkpoint_store.h"
#include "fedsgd/error.h"
#include "fedsgd/json_config.h"
#include "fedsgd/wire.h"
#include "http_api.h"

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
  app.add_flag("--insecure", o.insecure,
               "Allow listening on a non-loopback address without CURVE keys, and serving HTTP "
               "on one without --http-token (a warning is logged at every start)");
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
  app.add_option("--aggregator", o.aggregator, "Aggregation rule")
      ->capture_default_str()
      ->check(CLI::IsMember({"mean"}));

  app.add_option("--model", o.model, "Architecture, e.g. mlp:784-128-10, softmax:784-10")
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
  app.add_option("--lr-schedule", o.lr_schedule, "constant, step:S:G, exp:G or inv:G[:P]")
      ->capture_default_str();
  app.add_option("--server-lr", o.server_lr, "Server learning rate (1.0 = plain FedAvg)")
      ->capture_default_str()
      ->check(kPositive);
  app.add_option("--seed", o.seed, "Seed of the initial model")->capture_default_str();
  app.add_option("--prox-mu", o.prox_mu,
                 "FedAvg: FedProx proximal term mu, local loss + mu/2 ||w - w_global||^2 (Li et "
                 "al. 2020, Federated Optimization in Heterogeneous Networks); 0 = off")
      ->capture_default_str()
      ->check(kNonNegative);
  app.add_option("--eval-fraction", o.eval_fraction,
                 "Share of each device's shard held out for federated evaluation of every global "
                 "model (loss, accuracy, fairness over devices); 0 = off, at most 0.5")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.5));

  app.add_option("--rounds", o.rounds, "Rounds to run; the coordinator exits after the last")
      ->capture_default_str()
      ->check(kPositive);
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
  p.prox_mu = prox_mu;
  p.eval_fraction = eval_fraction;
  p.Validate();
  return p;
}

void CoordinatorOptions::Check() const {
  ToPlan();
  if (min_updates > min_devices) {
    throw Error("--min-updates (" + std::to_string(min_updates) +
                ") cannot exceed --min-devices (" + std::to_string(min_devices) + ")");
  }
  wire::CheckEndpoint(listen, /*for_bind=*/true);
  wire::CheckEndpoint(publish, /*for_bind=*/true);
  // Two binds of "HOST:*" get two free ports; any other repeat cannot bind.
  if (listen == publish && !listen.ends_with(":*"))
    throw Error("--listen and --publish must differ");
  ParseHostPort(http);
  namespace fs = std::filesystem;
  if (!eval_data.empty() && !fs::exists(eval_data))
    throw Error("--eval-data " + eval_data + ": no such file or directory");
  const fs::path parent = fs::absolute(db).parent_path();
  if (!fs::is_directory(parent))
    throw Error("--db " + db + ": directory " + parent.string() + " does not exist");
  if (fs::exists(db)) CheckpointStore::Open(db, /*read_only=*/true);
}

RoundSettings CoordinatorOptions::ToRoundSettings() const {
  RoundSettings s;
  s.rounds = rounds;
  s.min_devices = min_devices;
  s.quorum = quorum;
  s.min_updates = min_updates;
  s.round_timeout = round_timeout;
  // Three missed heartbeats, and never less than 3 s (a busy board may be late).
  s.heartbeat_timeout = std::max(3.0, 3.0 * heartbeat_ms / 1000.0);
  return s;
}

}  // namespace fedsgd
