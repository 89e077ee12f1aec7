// fedsgd-daemon: the on-device trainer.
//
//   fedsgd-daemon train ...   train locally with no coordinator
#include <CLI/CLI.hpp>
#include <iostream>

#include "fedsgd/error.h"
#include "train_command.h"

int main(int argc, char** argv) {
  CLI::App app{"fedsgd-daemon: trains a model on this device's data for a fedsgd federation."};
  app.set_version_flag("--version", "fedsgd-daemon " FEDSGD_VERSION);
  app.require_subcommand(1);
  fedsgd::TrainCommandOptions train;
  CLI::App* train_cmd = fedsgd::AddTrainCommand(app, train);
  CLI11_PARSE(app, argc, argv);
  try {
    if (train_cmd->parsed()) fedsgd::RunTrainCommand(train, std::cout, std::cerr);
  } catch (const fedsgd::Error& e) {
    std::cerr << "fedsgd-daemon: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
