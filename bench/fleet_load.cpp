// fedsgd_fleet_load: a load generator. It starts a real fedsgd-coordinator
// on loopback and N simulated devices in this process that speak the real
// protocol (docs/protocol.md) over one DEALER socket each: join, heartbeat at
// the pace the coordinator steers, train when invited (a configurable
// training-time distribution, no real SGD: the update is all zeros), ask for
// an upload slot, send. A share of the devices can fail: they train and
// never send. An invited device fetches the model (as a device that missed
// the broadcast does). By default the simulated devices do not subscribe to
// broadcasts, so the coordinator sends each round's model to the invited
// devices only; with --subscribe each connected device also holds a SUB
// connection, as the daemon does, and reads and drops the broadcasts. With
// --idle-disconnect S a device that the coordinator's pace steering sends
// away for S seconds or more closes its sockets until its next heartbeat,
// so idle devices hold no connection on the coordinator.
//
// Per fleet size it prints the mean round wall time, the coordinator's own
// figures for its last round (receive, aggregate, commit, broadcast), its
// CPU time and peak RSS (/proc), the heartbeats it received per second, and
// the devices' accepted / rejected / dropped-unsent counts. With --json, one
// JSON object per fleet size, including every round's record from
// /v1/rounds (the integration test reads those).
//
//   build/tests/fedsgd_fleet_load --coordinator build/coordinator/fedsgd-coordinator
//       --devices 100,1000,10000 --clients-per-round 0.1
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "checkpoint_store.h"
#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/wire.h"
#include "file_limit.h"
#include "free_port.h"
#include "sim_fleet.h"

namespace fedsgd {
namespace {

// The coordinator's CPU time and peak RSS, from the kernel's accounting of
// the reaped child (so also when it exited by itself before we looked).
struct ProcStats {
  double cpu_seconds = 0;
  double peak_rss_mb = 0;
};

ProcStats FromUsage(const rusage& u) {
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return {seconds(u.ru_utime) + seconds(u.ru_stime), static_cast<double>(u.ru_maxrss) / 1024.0};
}

constexpr std::size_t kDevicesPerProcess = 4000;

struct Worker {
  pid_t pid = -1;
  int stop_fd = -1;    // closed: the worker stops
  int result_fd = -1;  // its totals, one JSON line
};

Worker StartWorker(const Options& o, std::size_t first, std::size_t last, std::size_t parameters,
                   const std::string& endpoint) {
  int stop[2], result[2];
  if (pipe(stop) != 0 || pipe(result) != 0) {
    std::perror("fedsgd_fleet_load: pipe");
    std::exit(1);
  }
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    close(stop[1]);
    close(result[0]);
    Totals totals;
    std::atomic<bool> stopping{false};
    std::thread watch([&] {
      char c;
      while (read(stop[0], &c, 1) > 0) {
      }
      stopping = true;
    });
    {
      Fleet fleet(o, first, last, parameters, endpoint, totals);
      fleet.Run(stopping);
    }
    watch.join();
    nlohmann::json j = {{"heartbeats", totals.heartbeats.load()},
                        {"updates_sent", totals.updates_sent.load()},
                        {"accepted", totals.accepted.load()},
                        {"rejected", totals.rejected.load()},
                        {"rejected_by_reason", totals.rejected_by_reason},
                        {"dropped_unsent", totals.dropped_unsent.load()},
                        {"upload_waits", totals.upload_waits.load()},
                        {"failed", totals.failed.load()},
                        {"fetches", totals.fetches.load()},
                        {"welcomes", totals.welcomes.load()},
                        {"bad_messages", totals.bad.load()},
                        {"idle_disconnects", totals.disconnects.load()},
                        {"broadcasts", totals.broadcasts.load()}};
    const std::string line = j.dump() + "\n";
    (void)!write(result[1], line.data(), line.size());
    _exit(0);
  }
  close(stop[0]);
  close(result[1]);
  return {pid, stop[1], result[0]};
}

// Stops the workers and sums their totals.
nlohmann::json StopWorkers(std::vector<Worker>& workers) {
  nlohmann::json sum = nlohmann::json::object();
  for (Worker& w : workers) close(w.stop_fd);
  for (Worker& w : workers) {
    std::string text;
    char buffer[4096];
    for (ssize_t got; (got = read(w.result_fd, buffer, sizeof buffer)) > 0;) {
      text.append(buffer, static_cast<std::size_t>(got));
    }
    close(w.result_fd);
    int wstatus = 0;
    waitpid(w.pid, &wstatus, 0);
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) {
      sum["error"] = "a device process failed";
      continue;
    }
    for (const auto& [key, value] : j.items()) {
      if (value.is_object()) {
        if (!sum.contains(key)) sum[key] = nlohmann::json::object();
        for (const auto& [reason, count] : value.items()) {
          sum[key][reason] = sum[key].value(reason, std::uint64_t{0}) + count.get<std::uint64_t>();
        }
      } else {
        sum[key] = sum.value(key, std::uint64_t{0}) + value.get<std::uint64_t>();
      }
    }
  }
  if (!sum.contains("rejected_by_reason")) sum["rejected_by_reason"] = nlohmann::json::object();
  return sum;
}

nlohmann::json RunOnce(const Options& o, std::size_t n) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("fedsgd_fleet_load_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const int listen = FreePort(), publish = FreePort(), http = FreePort();
  const std::size_t parameters = Architecture::Parse(o.model).ParameterCount();
  std::vector<std::string> argv = {o.coordinator,
                                   "--listen",
                                   "tcp://127.0.0.1:" + std::to_string(listen),
                                   "--publish",
                                   "tcp://127.0.0.1:" + std::to_string(publish),
                                   "--http",
                                   "127.0.0.1:" + std::to_string(http),
                                   "--db",
                                   (dir / "fleet.db").string(),
                                   "--new-run",
                                   "--model",
                                   o.model,
                                   "--rounds",
                                   std::to_string(o.rounds),
                                   "--min-devices",
                                   std::to_string(n),
                                   "--max-devices",
                                   std::to_string(n + 16),
                                   "--max-joins-per-second",
                                   std::to_string(o.join_rate * 2),
                                   "--heartbeat-ms",
                                   std::to_string(o.heartbeat_ms),
                                   "--round-timeout",
                                   std::to_string(o.round_timeout),
                                   "--clients-per-round",
                                   o.clients_per_round,
                                   "--upload-slots",
                                   std::to_string(o.upload_slots)};
  argv.insert(argv.end(), o.extra.begin(), o.extra.end());
  const std::string log = (dir / "coordinator.log").string();
  std::fflush(stdout);  // else the child inherits (and prints) what is buffered
  const pid_t pid = fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stdout);
    std::freopen(log.c_str(), "a", stderr);
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  httplib::Client client("127.0.0.1", http);
  client.set_connection_timeout(1);
  client.set_read_timeout(10);
  auto status = [&]() -> nlohmann::json {
    auto res = client.Get("/v1/status");
    if (!res || res->status != 200) return nullptr;
    return nlohmann::json::parse(res->body, nullptr, false);
  };
  const auto t0 = Clock::now();
  while (status().is_null()) {
    int wstatus = 0;
    if (waitpid(pid, &wstatus, WNOHANG) == pid || Clock::now() - t0 > std::chrono::seconds(20)) {
      std::ifstream in(log);
      std::cerr << "fedsgd_fleet_load: the coordinator did not start:\n" << in.rdbuf();
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // The simulated devices, in worker processes of at most kDevicesPerProcess
  // each: a DEALER socket takes two descriptors (its TCP connection and its
  // mailbox), and a process's descriptor limit is its own.
  const std::size_t processes = (n + kDevicesPerProcess - 1) / kDevicesPerProcess;
  std::vector<Worker> workers;
  for (std::size_t p = 0; p < processes; ++p) {
    workers.push_back(StartWorker(o, n * p / processes, n * (p + 1) / processes, parameters,
                                  "tcp://127.0.0.1:" + std::to_string(listen)));
  }

  // Watch the run: each committed round's coordinator figures.
  std::vector<nlohmann::json> per_round;
  std::uint64_t seen = 0;
  double first_open = -1;
  const auto start = Clock::now();
  const double limit = 60 + static_cast<double>(n) / o.join_rate +
                       static_cast<double>(o.rounds) * (o.round_timeout + 5);
  std::string failure;
  int wstatus = 0;
  rusage usage{};
  bool exited = false;
  for (;;) {
    const nlohmann::json s = status();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (!s.is_null()) {
      if (first_open < 0 && s.value("open_round", 0) > 0) first_open = elapsed;
      const std::uint64_t round = s.value("round", std::uint64_t{0});
      if (round > seen && s["last_round"].is_object()) {
        seen = round;
        per_round.push_back(s["last_round"]);
        if (!o.json) {
          std::fprintf(stderr, "  N=%zu: round %llu committed at %.1f s\n", n,
                       static_cast<unsigned long long>(round), elapsed);
        }
      }
      if (round >= o.rounds) break;
    }
    // A coordinator that finished its rounds exits within a few ms of the
    // last commit, maybe before a status poll saw it: its database tells.
    if (wait4(pid, &wstatus, WNOHANG, &usage) == pid) {
      exited = true;
      if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
        failure = "the coordinator exited with status " + std::to_string(wstatus);
      }
      break;
    }
    if (elapsed > limit) {
      failure = "the run did not finish in " + std::to_string(static_cast<int>(limit)) + " s";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const double run_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const nlohmann::json totals = StopWorkers(workers);
  if (!exited) {
    kill(pid, SIGTERM);
    wait4(pid, &wstatus, 0, &usage);
  }
  const ProcStats proc = FromUsage(usage);
  // The committed rounds, from the coordinator's database (it has exited).
  nlohmann::json rounds = nlohmann::json::array();
  try {
    auto store = CheckpointStore::Open((dir / "fleet.db").string(), /*read_only=*/true);
    for (const RoundRecord& r : store->ListRounds(store->LatestRunId(), 0, 100000)) {
      rounds.push_back(r.ToJson());
      if (r.round > seen) per_round.push_back(r.ToJson());  // committed as it exited
    }
  } catch (const Error& e) {
    if (failure.empty()) failure = std::string("cannot read the rounds: ") + e.what();
  }
  fs::remove_all(dir);

  auto mean = [&](const char* key) {
    double sum = 0;
    for (const nlohmann::json& r : per_round) sum += r.value(key, 0.0);
    return per_round.empty() ? 0.0 : sum / static_cast<double>(per_round.size());
  };
  nlohmann::json out = {
      {"devices", n},
      {"parameters", parameters},
      {"clients_per_round", o.clients_per_round},
      {"rounds", per_round.size()},
      {"round_seconds", mean("seconds")},
      {"receive_seconds", mean("receive_seconds")},
      {"aggregate_seconds", mean("aggregate_seconds")},
      {"commit_seconds", mean("commit_seconds")},
      {"broadcast_seconds", mean("broadcast_seconds")},
      {"coordinator_cpu_seconds", proc.cpu_seconds},
      {"coordinator_peak_rss_mb", proc.peak_rss_mb},
      {"run_seconds", run_seconds},
      {"joined_seconds", first_open},
      {"heartbeats_per_second", totals.value("heartbeats", 0.0) / std::max(run_seconds, 1e-9)},
      {"records", rounds},
  };
  for (const auto& [key, value] : totals.items()) out[key] = value;
  if (!failure.empty()) out["error"] = failure;
  return out;
}

}  // namespace
}  // namespace fedsgd

int main(int argc, char** argv) {
  using namespace fedsgd;
  Options o;
  CLI::App app{
      "fedsgd_fleet_load: N simulated devices speaking the real protocol to a real "
      "fedsgd-coordinator on loopback (zero updates); prints round times, the coordinator's "
      "CPU and peak RSS, heartbeat load and accepted/rejected counts per fleet size"};
  app.add_option("--coordinator", o.coordinator, "Path of the fedsgd-coordinator binary")
      ->required();
  app.add_option("--devices", o.devices, "Fleet sizes to run, e.g. 100,1000,10000")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "Rounds per fleet size")->capture_default_str();
  app.add_option("--clients-per-round", o.clients_per_round,
                 "The coordinator's --clients-per-round (count or fraction; 0 = every device)")
      ->capture_default_str();
  app.add_option("--model", o.model, "Model (sets the update size)")->capture_default_str();
  app.add_option("--train-ms-min", o.train_ms_min, "Simulated training time, uniform from")
      ->capture_default_str();
  app.add_option("--train-ms-max", o.train_ms_max, "... to (ms)")->capture_default_str();
  app.add_option("--failure-rate", o.failure_rate,
                 "Share of invited devices that train and never send")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--heartbeat-ms", o.heartbeat_ms, "The coordinator's --heartbeat-ms")
      ->capture_default_str();
  app.add_option("--join-rate", o.join_rate, "Joins per second of the simulated fleet")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Threads driving the simulated devices")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--upload-slots", o.upload_slots, "The coordinator's --upload-slots")
      ->capture_default_str();
  app.add_option("--round-timeout", o.round_timeout, "The coordinator's --round-timeout")
      ->capture_default_str();
  app.add_option("--idle-disconnect", o.idle_disconnect,
                 "Devices told to come back after S seconds or more (pace steering) close their "
                 "connection until then, so idle devices hold no connection on the coordinator; "
                 "0 = they stay connected")
      ->capture_default_str();
  app.add_flag("--subscribe", o.subscribe,
               "Connected devices also subscribe to the coordinator's broadcasts, as the "
               "daemon does (two connections each; with --idle-disconnect both close)");
  app.add_flag("--json", o.json, "One JSON object per fleet size (with the round records)");
  app.add_option("--coordinator-arg", o.extra, "An extra coordinator argument (repeatable)");
  CLI11_PARSE(app, argc, argv);
  const FileLimit limit = RaiseFileLimit();
  // The coordinator holds a descriptor per device's connection (two with
  // --subscribe, unless --idle-disconnect closes most of them); a device
  // process two per socket of its share (kDevicesPerProcess devices at most).
  const std::size_t largest = *std::max_element(o.devices.begin(), o.devices.end());
  const std::size_t needed = largest * (o.subscribe && o.idle_disconnect <= 0 ? 2 : 1) + 256;
  if (limit.soft < needed) {
    std::cerr << "fedsgd_fleet_load: " << largest << " devices need about " << needed
              << " file descriptors in the coordinator; the limit is " << limit.soft << "\n";
    return 1;
  }
  if (!o.json) {
    std::printf("%8s %7s %9s %9s %9s %9s %9s %8s %9s %8s %9s %9s %8s\n", "devices", "rounds",
                "round s", "recv ms", "aggr ms", "commit ms", "bcast ms", "cpu s", "peak MB",
                "hb/s", "accepted", "rejected", "dropped");
  }
  int status = 0;
  for (const std::size_t n : o.devices) {
    const nlohmann::json r = RunOnce(o, n);
    if (r.contains("error")) status = 1;
    if (o.json) {
      std::cout << r.dump() << std::endl;
      continue;
    }
    std::printf(
        "%8zu %7zu %9.3f %9.2f %9.2f %9.2f %9.2f %8.2f %9.1f %8.0f %9llu %9llu %8llu%s\n", n,
        r["rounds"].get<std::size_t>(), r["round_seconds"].get<double>(),
        1000 * r["receive_seconds"].get<double>(), 1000 * r["aggregate_seconds"].get<double>(),
        1000 * r["commit_seconds"].get<double>(), 1000 * r["broadcast_seconds"].get<double>(),
        r["coordinator_cpu_seconds"].get<double>(), r["coordinator_peak_rss_mb"].get<double>(),
        r["heartbeats_per_second"].get<double>(),
        static_cast<unsigned long long>(r["accepted"].get<std::uint64_t>()),
        static_cast<unsigned long long>(r["rejected"].get<std::uint64_t>()),
        static_cast<unsigned long long>(r["dropped_unsent"].get<std::uint64_t>()),
        r.contains("error") ? ("  " + r["error"].get<std::string>()).c_str() : "");
    std::fflush(stdout);
  }
  return status;
}
