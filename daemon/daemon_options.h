// The daemon's own settings: where to connect, who it is, where its data is
// and how many threads to use. Everything about how to train comes from the
// coordinator's plan. Flags and/or a JSON config file, flags winning.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace fedsgd {

struct DaemonOptions {
  std::string coordinator;
  std::string id;
  std::string data;
  std::string shard = "0/1";
  std::string split = "iid";
  int threads = 0;  // 0: all cores
  std::string mode = "hogwild";
  std::uint64_t seed = 1;
  int label_column = -1;
  bool csv_header = false;
  bool exit_when_done = false;
  bool check_config = false;
  // CURVE (docs/security.md): this device's secret key file and the
  // coordinator's public key file. Both or neither.
  std::string key;
  std::string coordinator_key;
  bool insecure = false;                 // allows a non-loopback coordinator without keys
  std::string simulate_attack = "none";  // a simulation aid: see simulated_attack.h
  double slowdown = 1;                   // a simulation aid: see fedsgd/pacer.h
  // Device selection: close the connections while pace steering says to
  // come back after this many seconds or more and there is nothing to do;
  // reconnect for the next heartbeat. 0: stay connected.
  double idle_disconnect = 0;
  // Where the newest global model is kept for `predict` (saved_model.h);
  // empty: not kept. Defaults to $STATE_DIRECTORY (systemd's StateDirectory).
  std::string state_dir;
  // The local inference endpoint (inference_server.h): a Unix socket path;
  // empty: none.
  std::string inference_socket;
  // Which model it answers with: global, or personal (the personalised copy
  // once the plan's personalize_steps made one; the global model until then).
  std::string inference_model = "global";

  // Everything that can be checked without connecting or loading the data:
  // the endpoint, that --data exists, that --inference-socket fits a Unix
  // socket and its directory exists, the id, shard, split and mode, the
  // key files, and that a non-loopback coordinator has keys or --insecure. Fills
  // in the default id. Throws fedsgd::Error.
  void Check();
};

// Adds the run-mode flags (and --config) to app.
void AddDaemonOptions(CLI::App& app, DaemonOptions& options);

}  // namespace fedsgd
