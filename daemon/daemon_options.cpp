// The daemon's run-mode flags (see daemon_options.h).
#include "daemon_options.h"

#include <unistd.h>

#include <cctype>
#include <cmath>
#include <filesystem>

#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/error.h"
#include "fedsgd/json_config.h"
#include "fedsgd/shard.h"
#include "fedsgd/trainer.h"
#include "fedsgd/wire.h"
#include "simulated_attack.h"

namespace fedsgd {

void AddDaemonOptions(CLI::App& app, DaemonOptions& o) {
  AddJsonConfig(app);
  app.add_option("--coordinator", o.coordinator,
                 "Required: the coordinator's ZeroMQ endpoint, tcp://HOST:PORT (its --listen)");
  app.add_option("--id", o.id, "This device's id: 1-64 of A-Z a-z 0-9 . _ - (default: hostname)");
  app.add_option("--data", o.data,
                 "Required: the local data, a directory with IDX files (its train-* files are "
                 "used), an IDX images file, or a CSV file");
  app.add_option("--shard", o.shard, "Use shard i of n of the data, as i/n")->capture_default_str();
  app.add_option("--split", o.split, "How shards are cut: iid, labels:K or dirichlet:ALPHA")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Training threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--mode", o.mode, "hogwild (lock-free, fastest) or sync (deterministic)")
      ->capture_default_str()
      ->check(CLI::IsMember({"hogwild", "sync"}));
  app.add_option("--seed", o.seed,
                 "Seed for shards and shuffling (the same on every device of a simulated fleet, so "
                 "shards are disjoint)")
      ->capture_default_str();
  app.add_option("--label-column", o.label_column, "CSV: 0-based label column (-1: last)")
      ->capture_default_str();
  app.add_flag("--csv-header", o.csv_header, "CSV: the first line is a header");
  app.add_option("--simulate-attack", o.simulate_attack,
                 "SIMULATION AID for robust-aggregation experiments: make this daemon an "
                 "attacker that sends sign-flip (-delta), scale:K (K x delta), gaussian:SIGMA "
                 "(N(0, SIGMA^2) noise instead of the update) or label-flip (trains on labels "
                 "C-1-y) updates; none = honest")
      ->capture_default_str();
  app.add_option("--state-dir", o.state_dir,
                 "Keep the newest global model here (model.npy, model.json), written "
                 "atomically at most every 5 s, for `fedsgd-daemon predict` after a reboot or "
                 "while the coordinator is away; default $STATE_DIRECTORY (systemd), else not "
                 "kept")
      ->envname("STATE_DIRECTORY");
  app.add_option("--inference-socket", o.inference_socket,
                 "Answer inference requests from programs on this board on a Unix socket at "
                 "this path (created mode 0660: this user and group), always with the newest "
                 "model, on a thread of its own: one CSV row of inputs per line in, one JSON "
                 "line ({class, probabilities, model_version}) out; `model` tells which model "
                 "(docs/inference.md). Default: none");
  app.add_option("--inference-model", o.inference_model,
                 "What the inference socket answers with: global (the newest global model) or "
                 "personal (this board's personalised copy of it, made when the plan has "
                 "--personalize-steps; the global model until the first copy exists)")
      ->capture_default_str()
      ->check(CLI::IsMember({"global", "personal"}));
  app.add_option("--slowdown", o.slowdown,
                 "SIMULATION AID for straggler experiments on one machine: every mini-batch "
                 "takes F times as long (the daemon sleeps (F - 1) x its compute time); 1 = "
                 "full speed")
      ->capture_default_str();
  app.add_option(
         "--idle-disconnect", o.idle_disconnect,
         "With a device-selection plan (--clients-per-round): close the connections to "
         "the coordinator while its pace steering (Ack.heartbeat_ms) says to come back "
         "after S seconds or more and this device has nothing to do, and reconnect for "
         "the next heartbeat, so that an idle device holds no connection (it holds two, "
         "about 40 KB each on the coordinator); an invitation is then heard at that heartbeat "
         "(docs/protocol.md, pace steering; Bonawitz et al. 2019, 'Towards Federated "
         "Learning at Scale', 2.3). 0 = stay connected")
      ->capture_default_str();
  app.add_flag("--check-config", o.check_config,
               "Check the configuration (flags and --config file) and exit: 0 when it is usable");
  app.add_option("--key", o.key,
                 "CURVE (ZeroMQ RFC 26): this device's secret key file, mode 0600, made by "
                 "`fedsgd-daemon keygen`; its public half must be in the coordinator's "
                 "--authorized-keys as <id>.key (needs --coordinator-key; docs/security.md)");
  app.add_option("--coordinator-key", o.coordinator_key,
                 "With --key: the coordinator's public key file (its keygen's .key file)");
  app.add_flag("--insecure", o.insecure,
               "Allow a non-loopback --coordinator without CURVE keys (clear text, anyone on "
               "the path can read and forge the traffic)");
  app.add_flag("--exit-when-done", o.exit_when_done,
               "Exit when the coordinator announces the end of the run (default: stay up for the "
               "next run, as a service does)");
}

namespace {

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "device";
  std::string id(name);
  for (char& c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  }
  return id.substr(0, 64);
}

}  // namespace

void DaemonOptions::Check() {
  if (coordinator.empty()) throw Error("--coordinator is required (e.g. tcp://192.168.1.10:7070)");
  wire::CheckEndpoint(coordinator, /*for_bind=*/false);
  if (data.empty()) throw Error("--data is required");
  if (!std::filesystem::exists(data)) throw Error("--data " + data + ": no such file or directory");
  if (id.empty()) id = Hostname();
  if (!wire::ValidDeviceId(id)) {
    throw Error("--id '" + id + "' is not a device id (1-64 characters of A-Z a-z 0-9 . _ -)");
  }
  ShardIndex::Parse(shard);
  ShardSpec::Parse(split);
  ParseTrainMode(mode);
  if (key.empty() != coordinator_key.empty()) {
    throw Error(key.empty() ? "--coordinator-key needs --key (this device's secret key file)"
                            : "--key needs --coordinator-key (the coordinator's public key file)");
  }
  if (!key.empty()) {
    curve::LoadSecretKey(key);
    curve::LoadPublicKey(coordinator_key);
  } else if (!curve::IsLoopbackEndpoint(coordinator) && !insecure) {
    throw Error("--coordinator " + coordinator +
                " is on another machine: give --key and --coordinator-key to encrypt and "
                "authenticate (docs/security.md), or --insecure to send in clear text");
  }
  SimulatedAttack::Parse(simulate_attack);
  if (!inference_socket.empty()) {
    // sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
    if (inference_socket.size() > 107) {
      throw Error("--inference-socket " + inference_socket +
                  " is longer than a Unix socket path may be (107 bytes)");
    }
    const std::filesystem::path parent = std::filesystem::absolute(inference_socket).parent_path();
    if (!std::filesystem::is_directory(parent)) {
      throw Error("--inference-socket " + inference_socket + ": no directory " + parent.string());
    }
  }
  if (!std::isfinite(slowdown) || slowdown < 1 || slowdown > 1000) {
    throw Error("--slowdown must be in [1, 1000], not " + std::to_string(slowdown));
  }
  // At least a second: a shorter doze would cost more in reconnects than it
  // saves; at most an hour, the longest interval an Ack can give.
  if (!std::isfinite(idle_disconnect) || (idle_disconnect != 0 && idle_disconnect < 1) ||
      idle_disconnect > 3600) {
    throw Error("--idle-disconnect must be 0 (off) or in [1, 3600] seconds, not " +
                std::to_string(idle_disconnect));
  }
}

}  // namespace fedsgd
