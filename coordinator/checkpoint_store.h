// CheckpointStore: the coordinator's SQLite database of runs, rounds and
// model checkpoints.
//
// One file, WAL mode, synchronous=FULL. Committing round n writes the
// round's record and the new weights in ONE transaction, so after a crash at
// any instant (kill -9, power loss) the newest committed round has both, and
// a restart resumes from it. Every round's weights are kept (101,770 floats
// = 400 KB per round for an MLP 784-128-10), so older checkpoints can be
// served.
//
// Open() checks the file before use: a file that is not SQLite, is damaged
// (PRAGMA quick_check), belongs to another application (application_id) or
// has a newer schema is refused with a clear fedsgd::Error, never reused.
//
// Thread-safety: all methods may be called from several threads (an
// internal mutex serialises them); the HTTP side may also open its own
// read-only instance, which WAL lets read while the round thread commits.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

struct sqlite3;

namespace fedsgd {

struct DeviceContribution {
  std::string device;
  std::uint64_t samples = 0;
  double loss = 0;
  double train_seconds = 0;
};

struct RoundRecord {
  std::int64_t run_id = 0;
  std::uint64_t round = 0;  // committing round n makes model version n
  std::vector<DeviceContribution> devices;
  double train_loss = 0;  // sample-weighted mean of the devices' losses
  std::optional<double> test_accuracy;
  std::optional<double> test_loss;
  double started_at = 0;   // unix seconds
  double finished_at = 0;  // unix seconds
  double aggregate_seconds = 0;
  // (The commit's own duration cannot be stored in the transaction it
  // times: /v1/status and /metrics report it.)
  std::uint64_t rejected_updates = 0;
  std::uint64_t bytes_in = 0;

  nlohmann::json ToJson() const;
};

struct RunState {
  std::int64_t run_id = 0;
  nlohmann::json plan;
  std::uint64_t round = 0;  // newest committed round, 0 = the initial model
  std::vector<float> params;
  bool resumed = false;  // an existing run was continued
};

class CheckpointStore {
 public:
  // Opens or (unless read_only) creates the database at path. Throws
  // fedsgd::Error naming the file when it cannot be used (see above).
  static std::unique_ptr<CheckpointStore> Open(const std::string& path, bool read_only = false);
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // Resumes the newest run when its plan equals `plan` and !new_run
  // (returning its newest round and weights). When the newest run's plan
  // differs and !new_run, throws Error showing both plans. Otherwise starts
  // a run whose round 0 is initial_params.
  RunState StartRun(const nlohmann::json& plan, const std::vector<float>& initial_params,
                    bool new_run);

  // Commits the record and the weights of round record.round, which must be
  // the newest round + 1, in one transaction. Throws Error (and commits
  // nothing) on failure.
  void CommitRound(const RoundRecord& record, std::span<const float> params);

  // Rounds > since (ascending), at most limit. Round 0 (the initial model)
  // has no record.
  std::vector<RoundRecord> ListRounds(std::int64_t run_id, std::uint64_t since,
                                      std::size_t limit) const;
  std::optional<RoundRecord> GetRound(std::int64_t run_id, std::uint64_t round) const;
  std::optional<std::vector<float>> LoadParams(std::int64_t run_id, std::uint64_t round) const;
  std::uint64_t LatestRound(std::int64_t run_id) const;
  // The newest run's id, 0 when there is none.
  std::int64_t LatestRunId() const;
  const std::string& path() const { return path_; }

 private:
  CheckpointStore(sqlite3* db, std::string path);
  sqlite3* db_;
  std::string path_;
  mutable std::mutex mutex_;
};

}  // namespace fedsgd
