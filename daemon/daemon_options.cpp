// The daemon's run-mode flags (see daemon_options.h).
#include "daemon_options.h"

#include "fedsgd/json_config.h"

namespace fedsgd {

void AddDaemonOptions(CLI::App& app, DaemonOptions& o) {
  AddJsonConfig(app);
  app.add_option("--coordinator", o.coordinator,
                 "The coordinator's ZeroMQ endpoint, tcp://HOST:PORT (its --listen)");
  app.add_option("--id", o.id, "This device's id: 1-64 of A-Z a-z 0-9 . _ - (default: hostname)");
  app.add_option("--data", o.data,
                 "Local data: a directory with IDX files (its train-* files), an IDX images file, "
                 "or a CSV file");
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
  app.add_flag("--exit-when-done", o.exit_when_done,
               "Exit when the coordinator announces the end of the run (default: stay up for the "
               "next run, as a service does)");
}

}  // namespace fedsgd
