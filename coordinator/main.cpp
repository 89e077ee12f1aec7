// fedsgd-coordinator: collects model updates from the daemons of a fleet,
// averages them, checkpoints to SQLite and broadcasts new weights.
#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>

#include "coordinator_options.h"
#include "coordinator_server.h"
#include "fedsgd/error.h"
#include "fedsgd/service_notifier.h"

namespace {

std::atomic<bool> g_stop{false};

extern "C" void OnSignal(int) { g_stop.store(true); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fedsgd-coordinator: runs federated training rounds. Daemons join over ZeroMQ; each "
      "round's updates are averaged, committed to SQLite with the round record, and the new "
      "model is broadcast. Restarted on the same --db it resumes the run. Status as JSON on "
      "http://--http/v1/status. Ends after --rounds (or on SIGTERM/SIGINT) with a JSON summary "
      "on stdout."};
  app.set_version_flag("--version", "fedsgd-coordinator " FEDSGD_VERSION);
  fedsgd::CoordinatorOptions options;
  fedsgd::AddCoordinatorOptions(app, options);
  CLI11_PARSE(app, argc, argv);

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    if (options.check_config) {
      options.Check();
      std::cout << "fedsgd-coordinator: configuration ok" << std::endl;
      return 0;
    }
    fedsgd::CoordinatorServer server(options, std::cerr);
    server.Start();
    const nlohmann::json summary = server.Run(g_stop);
    std::cout << summary.dump() << std::endl;
    std::cerr << "fedsgd-coordinator: "
              << (summary["done"].get<bool>() ? "run complete" : "stopped") << " at round "
              << summary["round"] << std::endl;
  } catch (const fedsgd::Error& e) {
    std::cerr << fedsgd::LogPriority(fedsgd::LogLevel::kError) << "fedsgd-coordinator: " << e.what()
              << std::endl;
    return 1;
  }
  return 0;
}
