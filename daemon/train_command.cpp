// `fedsgd-daemon train`: flags, data loading, training and the JSON report.
#include "train_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/shard.h"
#include "fedsgd/trainer.h"

namespace fedsgd {

CLI::App* AddTrainCommand(CLI::App& app, TrainCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train locally with no coordinator, to check the data and the speed. Progress per "
      "epoch on stderr; one JSON line with the results on stdout.");
  cmd->add_option("--data", o.data,
                  "Training data: a directory with the IDX files (its train-* files), an IDX "
                  "images file, or a CSV file")
      ->required();
  cmd->add_option("--eval-data", o.eval_data,
                  "Evaluation data (a directory means its t10k-* files)");
  cmd->add_option("--shard", o.shard, "Train on shard i of n of the data, as i/n")
      ->capture_default_str();
  cmd->add_option("--split", o.split, "How shards are cut: iid, labels:K or dirichlet:ALPHA")
      ->capture_default_str();
  cmd->add_option("--model", o.model,
                  "Architecture, e.g. mlp:784-128-10, mlp:784-128-64-10:tanh, softmax:784-10, "
                  "logistic:30, linear:13, cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10")
      ->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "Epochs over the shard (may be fractional)")
      ->capture_default_str();
  cmd->add_option("--max-steps", o.max_steps, "Stop after this many mini-batches (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--batch", o.batch, "Mini-batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--lr", o.lr, "Learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--momentum", o.momentum, "SGD momentum")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9999));
  cmd->add_option("--weight-decay", o.weight_decay, "L2 regularisation")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--l1", o.l1, "L1 regularisation")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--lr-schedule", o.lr_schedule,
                  "constant, step:S:G, exp:G or inv:G[:P] (per mini-batch step)")
      ->capture_default_str();
  cmd->add_option("--early-stop", o.early_stop,
                  "Stop when an epoch's mean loss changes by less than this (0: off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", o.threads, "Training threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--mode", o.mode, "hogwild (lock-free, fastest) or sync (deterministic)")
      ->capture_default_str()
      ->check(CLI::IsMember({"hogwild", "sync"}));
  cmd->add_option("--seed", o.seed, "Seed for initialisation, shuffling and shards")
      ->capture_default_str();
  cmd->add_option("--label-column", o.label_column, "CSV: 0-based label column (-1: last)")
      ->capture_default_str();
  cmd->add_flag("--csv-header", o.csv_header, "CSV: the first line is a header");
  cmd->add_flag("--standardize", o.standardize,
                "Standardise features with the training shard's mean and deviation");
  return cmd;
}

namespace {

CsvOptions CsvOptionsFor(const TrainCommandOptions& o, const Architecture& arch) {
  CsvOptions csv;
  csv.label_column = o.label_column;
  csv.header = o.csv_header;
  csv.classification = arch.num_classes() > 0;
  return csv;
}

}  // namespace

void RunTrainCommand(const TrainCommandOptions& o, std::ostream& out, std::ostream& log) {
  const Architecture arch = Architecture::Parse(o.model);
  const ShardIndex shard = ShardIndex::Parse(o.shard);
  const ShardSpec split = ShardSpec::Parse(o.split);
  const CsvOptions csv = CsvOptionsFor(o, arch);

  TrainOptions train;
  train.threads = o.threads > 0
                      ? o.threads
                      : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  train.mode = ParseTrainMode(o.mode);
  train.batch = o.batch;
  train.epochs = o.epochs;
  train.max_steps = o.max_steps;
  train.sgd.lr = static_cast<float>(o.lr);
  train.sgd.momentum = static_cast<float>(o.momentum);
  train.sgd.weight_decay = static_cast<float>(o.weight_decay);
  train.sgd.l1 = static_cast<float>(o.l1);
  train.sgd.schedule = LrSchedule::Parse(o.lr_schedule);
  train.early_stop_delta = o.early_stop;
  train.seed = o.seed;

  auto t0 = std::chrono::steady_clock::now();
  Dataset data = LoadDataset(o.data, Split::kTrain, csv, ShardPicker(shard, split, o.seed));
  std::optional<Dataset> eval;
  if (!o.eval_data.empty()) eval = LoadDataset(o.eval_data, Split::kTest, csv);
  if (o.standardize) {
    const Standardizer scaler = Standardizer::Fit(data);
    scaler.Apply(data);
    if (eval) scaler.Apply(*eval);
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  log << "loaded " << data.size() << " training samples (shard " << o.shard << ", "
      << split.ToString() << ")";
  if (eval) log << " and " << eval->size() << " evaluation samples";
  log << " in " << load_seconds << " s\n";
  log << "training " << arch.ToString() << " (" << arch.ParameterCount() << " parameters), "
      << ToString(train.mode) << ", " << train.threads << " thread(s), batch " << train.batch
      << ", lr " << train.sgd.lr << std::endl;

  Model model = Model::Create(arch, o.seed);
  LocalTrainer trainer(train);
  const TrainStats stats = trainer.Train(model, data, [&](const EpochReport& e) {
    char line[160];
    std::snprintf(
        line, sizeof line, "epoch %d: loss %.4f, %.2f s, %.0f samples/s", e.epoch, e.train_loss,
        e.seconds,
        e.seconds > 0 ? static_cast<double>(std::min(e.samples, data.size())) / e.seconds : 0.0);
    log << line << std::endl;
  });

  nlohmann::json result = {
      {"model", arch.ToString()},
      {"mode", ToString(train.mode)},
      {"threads", train.threads},
      {"batch", train.batch},
      {"lr", o.lr},
      {"epochs", stats.epochs},
      {"steps", stats.steps},
      {"samples", stats.samples},
      {"train_samples", data.size()},
      {"seconds", stats.seconds},
      {"samples_per_second", stats.samples_per_second()},
      {"train_loss", stats.train_loss},
      {"early_stopped", stats.early_stopped},
  };
  if (eval) {
    const Evaluation ev = Evaluate(arch, model.params.data(), *eval, train.threads);
    result["test_accuracy"] = ev.accuracy;
    result["test_loss"] = ev.loss;
    result["test_samples"] = ev.samples;
    log << "test accuracy " << ev.accuracy << ", test loss " << ev.loss << "\n";
  }
  out << result.dump() << std::endl;
}

}  // namespace fedsgd
