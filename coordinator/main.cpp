// fedsgd-coordinator: collects model updates from the daemons of a fleet,
// averages them, checkpoints to SQLite and broadcasts new weights.
#include <malloc.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <iostream>
#include <optional>
#include <string_view>

#include "coordinator_options.h"
#include "coordinator_server.h"
#include "fedsgd/error.h"
#include "fedsgd/keygen_command.h"
#include "fedsgd/service_notifier.h"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};

extern "C" void OnSignal(int) { g_stop.store(true); }
extern "C" void OnReload(int) { g_reload.store(true); }

// Parses the command line (and --config). Returns the exit status when the
// program should end now: 0 after --help/--version, 2 for a usage error.
std::optional<int> Parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    constexpr std::string_view kExtra = "INI was not able to parse ";
    const std::string what = e.what();
    if (dynamic_cast<const CLI::ConfigError*>(&e) && what.starts_with(kExtra)) {
      // CLI11's wording for a config key that is no flag of ours.
      std::cerr << "fedsgd-coordinator: unknown key '" << what.substr(kExtra.size())
                << "' in the --config file (keys are flag names without the dashes)\n"
                << "Run with --help for more information.\n";
      return 2;
    }
    return app.exit(e) == 0 ? 0 : 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Updates and models are hundreds of KB each, allocated by libzmq's I/O
  // thread and freed by the loop. glibc's threshold for serving such
  // blocks with mmap rises after the first free of one (up to 32 MiB), and
  // from then on they come from the heap and the freed pages stay resident;
  // a fixed threshold keeps every block of 256 KiB and more mapped, so it
  // goes back to the system when freed and the peak resident size follows
  // what is really held (bench/fleet_load.cpp measures it).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_ARENA_MAX, 2);
  CLI::App app{
      "fedsgd-coordinator: runs federated training rounds. Daemons join over ZeroMQ; each "
      "round's updates are averaged, committed to SQLite with the round record, and the new "
      "model is broadcast. Restarted on the same --db it resumes the run. Status as JSON on "
      "http://--http/v1/status. Ends after --rounds (or on SIGTERM/SIGINT) with a JSON summary "
      "on stdout."};
  app.set_version_flag("--version", "fedsgd-coordinator " FEDSGD_VERSION);
  fedsgd::CoordinatorOptions options;
  fedsgd::AddCoordinatorOptions(app, options);
  app.require_subcommand(0, 1);
  fedsgd::KeygenOptions keygen;
  CLI::App* keygen_cmd = fedsgd::AddKeygenCommand(app, keygen, "coordinator");
  if (const std::optional<int> status = Parse(app, argc, argv)) return *status;

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGHUP, OnReload);
  try {
    if (keygen_cmd->parsed()) {
      fedsgd::RunKeygen(keygen, "coordinator",
                        "Start with --curve-key SECRET_FILE --authorized-keys DIR; give every "
                        "daemon the public key file (its --coordinator-key).",
                        std::cout);
      return 0;
    }
    if (options.check_config) {
      options.Check();
      std::cout << "fedsgd-coordinator: configuration ok" << std::endl;
      return 0;
    }
    fedsgd::CoordinatorServer server(options, std::cerr);
    server.Start(&g_stop);
    const nlohmann::json summary = server.Run(g_stop, &g_reload);
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
