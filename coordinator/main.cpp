// fedsgd-coordinator: collects model updates from the daemons of a fleet,
// averages them, checkpoints to SQLite and broadcasts new weights.
#include <CLI/CLI.hpp>
#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"fedsgd-coordinator: federated SGD coordinator (not yet implemented: only "
               "--help and --version work in this version)"};
  app.set_version_flag("--version", "fedsgd-coordinator " FEDSGD_VERSION);
  CLI11_PARSE(app, argc, argv);
  std::cerr << "fedsgd-coordinator: the federation is not implemented yet\n";
  return 2;
}
