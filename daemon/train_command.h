// `fedsgd-daemon train`: local training with no coordinator.
//
// What a board's owner runs to check the data and the speed: loads a data
// set (optionally one shard of it), trains with the multithreaded
// LocalTrainer, evaluates, prints progress per epoch on stderr and one JSON
// line with the figures on stdout.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace fedsgd {

struct TrainCommandOptions {
  std::string data;
  std::string eval_data;
  std::string shard = "0/1";
  std::string split = "iid";
  std::string model = "mlp:784-128-10";
  double epochs = 1;
  long max_steps = 0;
  int batch = 32;
  double lr = 0.05;
  double momentum = 0;
  double weight_decay = 0;
  double l1 = 0;
  std::string lr_schedule = "constant";
  double early_stop = 0;
  int threads = 0;  // 0: all cores
  std::string mode = "hogwild";
  std::uint64_t seed = 1;
  int label_column = -1;
  bool csv_header = false;
  bool standardize = false;
};

// Registers the `train` subcommand's flags on `app` (bound to `options`).
CLI::App* AddTrainCommand(CLI::App& app, TrainCommandOptions& options);

// Runs it. Progress goes to `log`, the JSON result line to `out`. Throws
// fedsgd::Error for bad input.
void RunTrainCommand(const TrainCommandOptions& options, std::ostream& out, std::ostream& log);

}  // namespace fedsgd
