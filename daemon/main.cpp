// fedsgd-daemon: the on-device trainer.
//
//   fedsgd-daemon --coordinator tcp://HOST:PORT --data DIR ...   take part in a federation
//   fedsgd-daemon train --data DIR ...                           train locally, no coordinator
//   fedsgd-daemon keygen --out PREFIX                            make a CURVE key pair
//   fedsgd-daemon predict --data FILE ...                        classify with the newest model
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>

#include "daemon_options.h"
#include "device_client.h"
#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/keygen_command.h"
#include "fedsgd/service_notifier.h"
#include "fedsgd/shard.h"
#include "predict_command.h"
#include "train_command.h"

namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int) { g_stop.store(true); }

int RunDaemon(fedsgd::DaemonOptions options) {
  using namespace fedsgd;
  options.Check();
  const ShardIndex shard = ShardIndex::Parse(options.shard);
  const ShardSpec split = ShardSpec::Parse(options.split);
  CsvOptions csv;
  csv.label_column = options.label_column;
  csv.header = options.csv_header;
  // Only this device's shard is kept in memory (for IDX data, only it is read).
  const Dataset data =
      LoadDataset(options.data, Split::kTrain, csv, ShardPicker(shard, split, options.seed));
  if (data.size() == 0) throw Error("shard " + options.shard + " of " + options.data + " is empty");

  DeviceClient client(options, data, std::cerr);
  try {
    return client.Run(g_stop);
  } catch (const zmq::error_t& e) {
    throw Error("ZeroMQ: " + std::string(e.what()) + " (is --coordinator " + options.coordinator +
                " a valid endpoint like tcp://HOST:PORT?)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  // One malloc arena for all threads. glibc gives each thread that
  // allocates an arena of its own, which keeps that thread's peak resident
  // for good (2 MiB measured by bench/daemon_memory.sh); the daemon's
  // threads allocate only around training (the training loop allocates
  // nothing), so the arenas bought no speed.
  mallopt(M_ARENA_MAX, 1);
  CLI::App app{
      "fedsgd-daemon: trains on this device's data for a fedsgd federation. Without a subcommand "
      "it joins the coordinator at --coordinator, trains each round with the coordinator's plan "
      "and sends model updates; it reconnects by itself when the coordinator goes away. "
      "SIGTERM/SIGINT stop it."};
  app.set_version_flag("--version", "fedsgd-daemon " FEDSGD_VERSION);
  app.require_subcommand(0, 1);
  fedsgd::DaemonOptions options;
  fedsgd::AddDaemonOptions(app, options);
  fedsgd::TrainCommandOptions train;
  CLI::App* train_cmd = fedsgd::AddTrainCommand(app, train);
  fedsgd::KeygenOptions keygen;
  CLI::App* keygen_cmd = fedsgd::AddKeygenCommand(app, keygen, "device");
  fedsgd::PredictCommandOptions predict;
  CLI::App* predict_cmd = fedsgd::AddPredictCommand(app, predict);
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    if (keygen_cmd->parsed()) {
      fedsgd::RunKeygen(keygen, "device",
                        "Copy the public key file to the coordinator's --authorized-keys "
                        "directory as <this device's id>.key, then `systemctl reload "
                        "fedsgd-coordinator`; run with --key SECRET_FILE --coordinator-key "
                        "COORDINATOR_PUBLIC_FILE.",
                        std::cout);
      return 0;
    }
    if (predict_cmd->parsed()) {
      fedsgd::RunPredictCommand(predict, std::cout, std::cerr);
      return 0;
    }
    if (train_cmd->parsed()) {
      fedsgd::RunTrainCommand(train, std::cout, std::cerr);
      return 0;
    }
    if (options.check_config) {
      options.Check();
      std::cout << "fedsgd-daemon: configuration ok" << std::endl;
      return 0;
    }
    return RunDaemon(options);
  } catch (const fedsgd::Error& e) {
    std::cerr << fedsgd::LogPriority(fedsgd::LogLevel::kError) << "fedsgd-daemon: " << e.what()
              << "\n";
    return 1;
  }
}
