// CheckpointStore: the coordinator's SQLite database of runs, rounds and
// model checkpoints.
//
// One file, WAL mode, synchronous=FULL. Committing round n writes the
// round's record and the new weights in ONE transaction, so after a crash at
// any instant (kill -9, power loss) the newest committed round has both, and
// a restart resumes from it. Every round's weights are kept, as little-endian
// float32 blobs, so older checkpoints can be served (?round=N): 101,770
// floats = 400 KB per round for an MLP 784-128-10, i.e. 400 MB per 1000
// rounds. (A blob is limited to SQLite's 1 GB, i.e. 250M parameters.)
//
// Schema 2 adds the server state (ServerState: optimiser moments, norm-bound
// history; only the newest round's is kept, rewritten in the round's
// transaction) and each round's "aggregation" record. A schema-1 file is
// upgraded in place when opened for writing (read-only it reads as before,
// without them).
//
// Open() checks the file before use: a file that is not SQLite, is damaged
// (PRAGMA quick_check, or SQLite reporting SQLITE_CORRUPT / SQLITE_NOTADB),
// belongs to another application (application_id) or has a newer schema
// (user_version) is refused with a fedsgd::Error naming the file, never
// reused. A schema-1 file (before rounds.privacy) is upgraded in place when
// opened for writing; read-only, its rounds read with a null privacy. quick_check reads the whole
// file, so opening costs time in proportion to its size. It checks SQLite's structure, not the
// bytes inside a blob: weights whose bytes were flipped in place go undetected; a blob of the wrong
// length is reported as damage when it is read.
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

#include "federated_evaluation.h"
#include "fedsgd/wire.h"
#include "server_state.h"

struct sqlite3;

namespace fedsgd {

struct DeviceContribution {
  std::string device;
  std::uint64_t samples = 0;
  double loss = 0;
  double train_seconds = 0;
  // Federated evaluation of the model the device trained from (absent when
  // it sent none). Stored in the devices JSON column as eval_loss,
  // eval_accuracy, eval_samples.
  std::optional<wire::HeldOutEvaluation> evaluation;
  // Asynchronous mode: the model version the update was trained from (its
  // staleness is round - 1 - model_version). Stored as model_version and
  // staleness; absent in synchronous rounds, where it is always round - 1.
  std::optional<std::uint64_t> model_version;
  // Personalisation (Plan::personalize_steps): the device's fine-tuned copy
  // on the same held-out samples. Stored as personal_loss, personal_accuracy.
  std::optional<wire::HeldOutEvaluation> personal = std::nullopt;
};

// A round's view of personalisation, over the devices that reported both
// evaluations: the mean (over devices, unweighted) held-out accuracy of the
// global model and of their personalised copies, and how many devices the
// personalisation made worse (personalised accuracy below the global one).
struct PersonalisationSummary {
  std::size_t devices = 0;
  double global_accuracy = 0;
  double personal_accuracy = 0;
  std::size_t worse = 0;
  double worse_share() const {
    return devices ? static_cast<double>(worse) / static_cast<double>(devices) : 0;
  }
  nlohmann::json ToJson() const;
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
  // Differential privacy's figures for the round (RoundManager::CloseRound),
  // null without it. Stored whole; ToJson leaves out its "state".
  nlohmann::json privacy;
  // What the aggregation rule did (AggregationStats::ToJson plus the server
  // optimiser); null for rounds committed before it was recorded.
  nlohmann::json aggregation;

  // Derived from devices (federated_evaluation.h); nullopt without any.
  std::optional<FederatedEvaluation> federated_evaluation() const;
  // nullopt when no device reported a personalised evaluation.
  std::optional<PersonalisationSummary> personalisation() const;
  // Includes the derived federated_accuracy, federated_loss,
  // federated_accuracy_min / _median / _max, federated_devices and
  // federated_samples (null when no device evaluated).
  nlohmann::json ToJson() const;
};

struct RunState {
  std::int64_t run_id = 0;
  nlohmann::json plan;
  std::uint64_t round = 0;  // newest committed round, 0 = the initial model
  std::vector<float> params;
  ServerState state;     // committed with `round` (empty for a new run)
  bool resumed = false;  // an existing run was continued
};

class CheckpointStore {
 public:
  // Opens or (unless read_only) creates the database at path, and sets
  // journal_mode=WAL, synchronous=FULL, foreign_keys=ON and a busy timeout.
  // Throws fedsgd::Error naming the file when it cannot be used (see above),
  // or when read_only and it does not exist.
  static std::unique_ptr<CheckpointStore> Open(const std::string& path, bool read_only = false);
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  // Resumes the newest run when its plan equals `plan` and !new_run (a
  // stored plan is compared in its current form, Plan::FromJson(stored)
  // .ToJson(), so fields added since read as their defaults)
  // (returning its newest round and weights). When the newest run's plan
  // differs and !new_run, throws Error showing both plans and pointing to
  // --new-run; so does a resumed checkpoint whose size is not
  // initial_params.size(). Otherwise starts a run whose round 0 is
  // initial_params, in one transaction.
  RunState StartRun(const nlohmann::json& plan, const std::vector<float>& initial_params,
                    bool new_run);

  // Commits the record, the weights and the server state of round
  // record.round in one transaction (the state replaces the run's previous
  // one). The round must be the run's newest round + 1 and params
  // must have as many values as the run's initial model. Throws Error on
  // failure, and then nothing is committed.
  void CommitRound(const RoundRecord& record, std::span<const float> params,
                   const ServerState& state = {});
  // A gateway (docs/protocol.md "Gateways"): stores its root's model of
  // `round` as the run's newest checkpoint, without a round record (the
  // gateway took no part in the rounds up to it, or was not running), and
  // clears the server state. The round must be newer than the run's newest
  // and params as long as its initial model. Throws Error otherwise.
  void AdoptCheckpoint(std::int64_t run_id, std::uint64_t round, std::span<const float> params);
  // The server state committed with the run's newest round.
  ServerState LoadState(std::int64_t run_id) const;

  // Records of the rounds > since, ascending, at most limit (since 0 starts
  // at round 1: round 0, the initial model, has no record).
  std::vector<RoundRecord> ListRounds(std::int64_t run_id, std::uint64_t since,
                                      std::size_t limit) const;
  // The record of one round; nullopt when it is not committed.
  std::optional<RoundRecord> GetRound(std::int64_t run_id, std::uint64_t round) const;
  // The weights of one round (0 = the initial model); nullopt when it is not
  // committed. Throws Error when the stored blob does not hold as many
  // floats as the run's initial model (a damaged database).
  std::optional<std::vector<float>> LoadParams(std::int64_t run_id, std::uint64_t round) const;
  // The run's newest committed round; 0 when only the initial model is (or
  // when there is no such run).
  std::uint64_t LatestRound(std::int64_t run_id) const;
  // The newest run's id, 0 when there is none.
  std::int64_t LatestRunId() const;
  // The plan a run was started with, as stored; nullopt when there is no
  // such run. Throws Error when the stored text is not JSON (damaged).
  std::optional<nlohmann::json> RunPlan(std::int64_t run_id) const;
  const std::string& path() const { return path_; }

 private:
  struct CloseDb {
    void operator()(sqlite3* db) const noexcept;
  };
  CheckpointStore(sqlite3* db, std::string path);
  ServerState LoadStateLocked(std::int64_t run_id) const;
  // The number of floats in the run's initial model, which every checkpoint
  // of the run has. Caller holds mutex_.
  std::int64_t InitialSize(std::int64_t run_id) const;
  mutable std::mutex mutex_;              // serialises all use of db_
  std::unique_ptr<sqlite3, CloseDb> db_;  // opened SQLITE_OPEN_NOMUTEX: mutex_ guards it
  std::string path_;
  std::int64_t schema_version_ = 0;  // of the file as opened
};

}  // namespace fedsgd
