// CheckpointStore (see checkpoint_store.h): opening and migrating the file,
// runs, rounds, checkpoints and server state. The schema is in
// checkpoint_schema.h, the SQLite helpers in sqlite_statement.h, the
// records' JSON in round_record.cpp.
#include "checkpoint_store.h"

#include <sqlite3.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <limits>

#include "checkpoint_schema.h"
#include "fedsgd/error.h"
#include "fedsgd/plan.h"
#include "sqlite_statement.h"
#include "wall_clock.h"

namespace fedsgd {
namespace {

using checkpoint_schema::kApplicationId;
using checkpoint_schema::kSchema;
using checkpoint_schema::kSchemaVersion;
using checkpoint_schema::kServerStateTable;
using sqlite::Exec;
using sqlite::QueryInt;
using sqlite::QueryText;
using sqlite::Statement;
using sqlite::ThrowSqlite;
using sqlite::Transaction;

// Round numbers are stored as SQLite's signed 64-bit integers; a larger one
// (e.g. from ?since= in a URL) names no stored round.
bool InRange(std::uint64_t v) {
  return v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
}

RoundRecord ReadRound(const Statement& s, const std::string& path) {
  RoundRecord r;
  r.run_id = s.Int(0);
  r.round = static_cast<std::uint64_t>(s.Int(1));
  r.train_loss = s.Double(2);
  r.test_accuracy = s.MaybeDouble(3);
  r.test_loss = s.MaybeDouble(4);
  r.started_at = s.Double(5);
  r.finished_at = s.Double(6);
  r.aggregate_seconds = s.Double(7);
  r.rejected_updates = static_cast<std::uint64_t>(s.Int(8));
  r.bytes_in = static_cast<std::uint64_t>(s.Int(9));
  if (!s.IsNull(11)) {
    r.aggregation = nlohmann::json::parse(s.Text(11), nullptr, false);
    if (r.aggregation.is_discarded()) {
      throw Error(path + ": the aggregation record of round " + std::to_string(r.round) +
                  " is not JSON: the database is damaged");
    }
  }
  if (!s.IsNull(12)) {
    r.privacy = nlohmann::json::parse(s.Text(12), nullptr, false);
    if (!r.privacy.is_object()) {
      throw Error(path + ": the privacy record of round " + std::to_string(r.round) + " of run " +
                  std::to_string(r.run_id) + " is not JSON: the database is damaged");
    }
  }
  const nlohmann::json devices = nlohmann::json::parse(s.Text(10), nullptr, false);
  const auto damaged = [&] {
    return Error(path + ": the device list of round " + std::to_string(r.round) + " of run " +
                 std::to_string(r.run_id) + " is not what fedsgd writes: the database is damaged");
  };
  if (!devices.is_array()) throw damaged();
  // JSON has no NaN: a device's NaN loss was written as null.
  const auto number = [](const nlohmann::json& v) {
    return v.is_null() ? std::numeric_limits<double>::quiet_NaN() : v.get<double>();
  };
  try {
    for (const auto& d : devices) {
      DeviceContribution c{d.at("device").get<std::string>(),
                           d.at("samples").get<std::uint64_t>(),
                           number(d.at("loss")),
                           number(d.at("train_seconds")),
                           std::nullopt,
                           std::nullopt};
      if (d.contains("eval_samples")) {
        c.evaluation =
            wire::HeldOutEvaluation{number(d.at("eval_loss")), number(d.at("eval_accuracy")),
                                    d.at("eval_samples").get<std::uint64_t>()};
        if (d.contains("personal_accuracy")) {
          c.personal =
              wire::HeldOutEvaluation{number(d.at("personal_loss")),
                                      number(d.at("personal_accuracy")), c.evaluation->samples};
        }
      }
      if (d.contains("model_version")) {
        c.model_version = d.at("model_version").get<std::uint64_t>();
        if (*c.model_version >= r.round) throw damaged();
      }
      r.devices.push_back(std::move(c));
    }
  } catch (const nlohmann::json::exception&) {
    throw damaged();
  }
  return r;
}

// A schema-1 file opened read-only has neither column: NULL stands in.
std::string RoundColumns(std::int64_t schema) {
  return std::string(
             "run_id, round, train_loss, test_accuracy, test_loss, started_at, finished_at, "
             "aggregate_seconds, rejected_updates, bytes_in, devices, ") +
         (schema >= 2 ? "aggregation, privacy" : "NULL, NULL");
}

}  // namespace

void CheckpointStore::CloseDb::operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }

CheckpointStore::CheckpointStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

CheckpointStore::~CheckpointStore() = default;

std::unique_ptr<CheckpointStore> CheckpointStore::Open(const std::string& path, bool read_only) {
  std::error_code ec;
  if (read_only && !std::filesystem::exists(path, ec)) throw Error(path + ": no such database");
  sqlite3* raw = nullptr;
  const int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  // NOMUTEX: the store's own mutex serialises the connection.
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<CheckpointStore> store(new CheckpointStore(raw, path));
  if (rc != SQLITE_OK) {
    throw Error(path +
                ": cannot open the database: " + (raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3* db = store->db_.get();
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);

  // Reading the schema is the first real access: a file that is not SQLite
  // fails here with SQLITE_NOTADB.
  const std::int64_t tables =
      QueryInt(db, path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'");
  const std::int64_t app = QueryInt(db, path, "PRAGMA application_id");
  if (tables > 0 || app != 0) {
    if (app != kApplicationId) {
      throw Error(path + ": this SQLite database belongs to another application (application_id " +
                  std::to_string(app) + "), not to fedsgd; choose another --db file");
    }
    const std::int64_t version = QueryInt(db, path, "PRAGMA user_version");
    store->schema_version_ = version;
    if (version > kSchemaVersion) {
      throw Error(path + ": written by a newer fedsgd (schema " + std::to_string(version) +
                  ", this one knows up to " + std::to_string(kSchemaVersion) +
                  "); upgrade fedsgd or choose another --db file");
    }
    // The first line of quick_check's report is "ok" or the first problem.
    std::string verdict = QueryText(db, path, "PRAGMA quick_check");
    if (verdict != "ok") {
      const std::string banner = "*** in database main ***\n";
      if (verdict.starts_with(banner)) verdict.erase(0, banner.size());
      throw Error(path + ": the database is damaged (quick_check: " + verdict +
                  "); restore a backup or choose another --db file");
    }
  }
  if (!read_only) {
    // WAL lets the HTTP side's read-only connection read while rounds
    // commit; FULL syncs the WAL on every commit, so a committed round
    // survives power loss, not only a killed process.
    const std::string mode = QueryText(db, path, "PRAGMA journal_mode = WAL");
    if (mode != "wal") {
      throw Error(path + ": SQLite cannot use write-ahead logging here (journal_mode stays '" +
                  mode + "'); put the database on a local file system");
    }
    Exec(db, path, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON");
    if (tables == 0) {
      Transaction t(db, path);
      Exec(db, path, kSchema);
      Exec(db, path,
           "PRAGMA application_id = " + std::to_string(kApplicationId) +
               "; PRAGMA user_version = " + std::to_string(kSchemaVersion));
      Exec(db, path, kServerStateTable);
      t.Commit();
      store->schema_version_ = kSchemaVersion;
    } else if (store->schema_version_ < kSchemaVersion) {
      // Upgrade in place, in one transaction: 1 -> 2. Nullable columns, so
      // older rounds need no rewrite.
      Transaction t(db, path);
      Exec(db, path, "ALTER TABLE rounds ADD COLUMN aggregation TEXT");
      Exec(db, path, "ALTER TABLE rounds ADD COLUMN privacy TEXT");
      Exec(db, path, kServerStateTable);
      Exec(db, path, "PRAGMA user_version = " + std::to_string(kSchemaVersion));
      t.Commit();
      store->schema_version_ = kSchemaVersion;
    }
  }
  return store;
}

std::int64_t CheckpointStore::InitialSize(std::int64_t run_id) const {
  Statement s(db_.get(), path_,
              "SELECT length(params) FROM checkpoints WHERE run_id = ? AND round = 0");
  s.Bind(1, run_id);
  if (!s.Step()) {
    throw Error(path_ + ": run " + std::to_string(run_id) +
                " has no initial model (round 0): the database is damaged");
  }
  const std::int64_t bytes = s.Int(0);
  if (bytes % static_cast<std::int64_t>(sizeof(float)) != 0) {
    throw Error(path_ + ": the initial model of run " + std::to_string(run_id) + " is " +
                std::to_string(bytes) + " bytes, not whole floats: the database is damaged");
  }
  return bytes / static_cast<std::int64_t>(sizeof(float));
}

RunState CheckpointStore::StartRun(const nlohmann::json& plan,
                                   const std::vector<float>& initial_params, bool new_run) {
  std::lock_guard lock(mutex_);
  sqlite3* db = db_.get();
  RunState state;
  if (!new_run) {
    Statement newest(db, path_, "SELECT id, plan FROM runs ORDER BY id DESC LIMIT 1");
    if (newest.Step()) {
      const std::int64_t id = newest.Int(0);
      nlohmann::json stored = nlohmann::json::parse(newest.Text(1), nullptr, false);
      // In today's form: fields added since the run started read as defaults.
      try {
        stored = Plan::FromJson(stored).ToJson();
      } catch (const Error&) {
        // Not a plan this version reads: shown as stored, and refused below.
      }
      if (stored != plan) {
        throw Error(path_ + " holds run " + std::to_string(id) +
                    " with a different plan:\n  stored:    " + stored.dump() +
                    "\n  requested: " + plan.dump() +
                    "\nStart the same plan to resume it, or pass --new-run to start a new run in "
                    "this database.");
      }
      state.run_id = id;
      state.plan = stored;
      state.resumed = true;
    }
  }
  if (state.resumed) {
    Statement latest(db, path_,
                     "SELECT round, params FROM checkpoints WHERE run_id = ? "
                     "ORDER BY round DESC LIMIT 1");
    latest.Bind(1, state.run_id);
    if (!latest.Step())
      throw Error(path_ + ": run " + std::to_string(state.run_id) + " has no checkpoint");
    state.round = static_cast<std::uint64_t>(latest.Int(0));
    const std::int64_t stored_size = InitialSize(state.run_id);
    if (stored_size != static_cast<std::int64_t>(initial_params.size())) {
      throw Error(path_ + ": run " + std::to_string(state.run_id) + " has " +
                  std::to_string(stored_size) + " parameters but the plan's model has " +
                  std::to_string(initial_params.size()) +
                  "; pass --new-run to start a new run in this database");
    }
    state.params = latest.Floats(
        1, stored_size,
        "round " + std::to_string(state.round) + " of run " + std::to_string(state.run_id));
    state.state = LoadStateLocked(state.run_id);
    return state;
  }
  Transaction t(db, path_);
  Statement run(db, path_, "INSERT INTO runs (plan, created_at) VALUES (?, ?)");
  run.Bind(1, plan.dump()).Bind(2, UnixNow()).Step();
  state.run_id = sqlite3_last_insert_rowid(db);
  Statement cp(db, path_, "INSERT INTO checkpoints (run_id, round, params) VALUES (?, 0, ?)");
  cp.Bind(1, state.run_id).BindFloats(2, initial_params).Step();
  t.Commit();
  state.plan = plan;
  state.params = initial_params;
  return state;
}

void CheckpointStore::CommitRound(const RoundRecord& r, std::span<const float> params,
                                  const ServerState& state) {
  std::lock_guard lock(mutex_);
  sqlite3* db = db_.get();
  Transaction t(db, path_);
  Statement latest(db, path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
  latest.Bind(1, r.run_id);
  if (!latest.Step() || latest.IsNull(0))
    throw Error(path_ + ": cannot commit round " + std::to_string(r.round) + ": there is no run " +
                std::to_string(r.run_id));
  const auto newest = static_cast<std::uint64_t>(latest.Int(0));
  if (r.round != newest + 1) {
    throw Error(path_ + ": cannot commit round " + std::to_string(r.round) + " of run " +
                std::to_string(r.run_id) + ": the newest committed round is " +
                std::to_string(newest));
  }
  const std::int64_t size = InitialSize(r.run_id);
  if (static_cast<std::int64_t>(params.size()) != size) {
    throw Error(path_ + ": cannot commit round " + std::to_string(r.round) + " of run " +
                std::to_string(r.run_id) + ": it has " + std::to_string(params.size()) +
                " parameters, the run's model has " + std::to_string(size));
  }
  Statement rec(db, path_,
                "INSERT INTO rounds (run_id, round, train_loss, test_accuracy, test_loss, "
                "started_at, finished_at, aggregate_seconds, rejected_updates, bytes_in, devices, "
                "aggregation, privacy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, ''), ?)");
  rec.Bind(1, r.run_id).Bind(2, r.round).Bind(3, r.train_loss).Bind(4, r.test_accuracy);
  rec.Bind(5, r.test_loss).Bind(6, r.started_at).Bind(7, r.finished_at);
  rec.Bind(8, r.aggregate_seconds).Bind(9, r.rejected_updates).Bind(10, r.bytes_in);
  rec.Bind(11, r.ToJson()["devices"].dump());
  rec.Bind(12, r.aggregation.is_null() ? std::string() : r.aggregation.dump());
  if (r.privacy.is_null()) {
    rec.BindNull(13);
  } else {
    rec.Bind(13, r.privacy.dump());
  }
  rec.Step();
  Statement cp(db, path_, "INSERT INTO checkpoints (run_id, round, params) VALUES (?, ?, ?)");
  cp.Bind(1, r.run_id).Bind(2, r.round).BindFloats(3, params).Step();
  Statement forget(db, path_, "DELETE FROM server_state WHERE run_id = ?");
  forget.Bind(1, r.run_id).Step();
  for (const auto& [name, values] : state) {
    Statement st(db, path_,
                 "INSERT INTO server_state (run_id, name, round, data) VALUES (?, ?, ?, ?)");
    st.Bind(1, r.run_id).Bind(2, name).Bind(3, r.round).BindDoubles(4, values).Step();
  }
  t.Commit();
}

void CheckpointStore::AdoptCheckpoint(std::int64_t run_id, std::uint64_t round,
                                      std::span<const float> params) {
  std::lock_guard lock(mutex_);
  sqlite3* db = db_.get();
  Transaction t(db, path_);
  Statement latest(db, path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
  latest.Bind(1, run_id);
  if (!latest.Step() || latest.IsNull(0))
    throw Error(path_ + ": cannot store round " + std::to_string(round) + ": there is no run " +
                std::to_string(run_id));
  const auto newest = static_cast<std::uint64_t>(latest.Int(0));
  if (round <= newest) {
    throw Error(path_ + ": cannot store the root's round " + std::to_string(round) + " in run " +
                std::to_string(run_id) + ": its newest round is " + std::to_string(newest));
  }
  if (static_cast<std::int64_t>(params.size()) != InitialSize(run_id)) {
    throw Error(path_ + ": the root's round " + std::to_string(round) + " has " +
                std::to_string(params.size()) + " parameters, run " + std::to_string(run_id) +
                "'s model " + std::to_string(InitialSize(run_id)));
  }
  Statement cp(db, path_, "INSERT INTO checkpoints (run_id, round, params) VALUES (?, ?, ?)");
  cp.Bind(1, run_id).Bind(2, round).BindFloats(3, params).Step();
  Statement forget(db, path_, "DELETE FROM server_state WHERE run_id = ?");
  forget.Bind(1, run_id).Step();
  t.Commit();
}

ServerState CheckpointStore::LoadState(std::int64_t run_id) const {
  std::lock_guard lock(mutex_);
  return LoadStateLocked(run_id);
}

ServerState CheckpointStore::LoadStateLocked(std::int64_t run_id) const {
  ServerState state;
  if (schema_version_ < 2) return state;
  Statement latest(db_.get(), path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
  latest.Bind(1, run_id);
  const std::int64_t newest = latest.Step() ? latest.Int(0) : 0;
  Statement s(db_.get(), path_, "SELECT name, round, data FROM server_state WHERE run_id = ?");
  s.Bind(1, run_id);
  while (s.Step()) {
    const std::string name = s.Text(0);
    if (s.Int(1) != newest) {
      throw Error(path_ + ": the server state '" + name + "' of run " + std::to_string(run_id) +
                  " belongs to round " + std::to_string(s.Int(1)) + ", not to the newest round " +
                  std::to_string(newest) + ": the database is damaged");
    }
    state[name] = s.Doubles(2, "the server state '" + name + "'");
  }
  return state;
}

std::vector<RoundRecord> CheckpointStore::ListRounds(std::int64_t run_id, std::uint64_t since,
                                                     std::size_t limit) const {
  if (!InRange(since) || limit == 0) return {};
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_,
              std::string("SELECT ") + RoundColumns(schema_version_) +
                  " FROM rounds WHERE run_id = ? AND round > ? ORDER BY round LIMIT ?");
  // A limit beyond int64 becomes -1, which SQLite reads as "no limit".
  s.Bind(1, run_id).Bind(2, since).Bind(3, static_cast<std::int64_t>(limit));
  std::vector<RoundRecord> out;
  while (s.Step()) out.push_back(ReadRound(s, path_));
  return out;
}

std::optional<RoundRecord> CheckpointStore::GetRound(std::int64_t run_id,
                                                     std::uint64_t round) const {
  if (!InRange(round)) return std::nullopt;
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_,
              std::string("SELECT ") + RoundColumns(schema_version_) +
                  " FROM rounds WHERE run_id = ? AND round = ?");
  s.Bind(1, run_id).Bind(2, round);
  if (!s.Step()) return std::nullopt;
  return ReadRound(s, path_);
}

std::optional<std::vector<float>> CheckpointStore::LoadParams(std::int64_t run_id,
                                                              std::uint64_t round) const {
  if (!InRange(round)) return std::nullopt;
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_, "SELECT params FROM checkpoints WHERE run_id = ? AND round = ?");
  s.Bind(1, run_id).Bind(2, round);
  if (!s.Step()) return std::nullopt;
  return s.Floats(0, InitialSize(run_id),
                  "round " + std::to_string(round) + " of run " + std::to_string(run_id));
}

std::uint64_t CheckpointStore::LatestRound(std::int64_t run_id) const {
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
  s.Bind(1, run_id);
  return s.Step() ? static_cast<std::uint64_t>(s.Int(0)) : 0;
}

std::int64_t CheckpointStore::LatestRunId() const {
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_, "SELECT max(id) FROM runs");
  return s.Step() ? s.Int(0) : 0;
}

std::optional<nlohmann::json> CheckpointStore::RunPlan(std::int64_t run_id) const {
  std::lock_guard lock(mutex_);
  Statement s(db_.get(), path_, "SELECT plan FROM runs WHERE id = ?");
  s.Bind(1, run_id);
  if (!s.Step()) return std::nullopt;
  nlohmann::json plan = nlohmann::json::parse(s.Text(0), nullptr, /*allow_exceptions=*/false);
  if (plan.is_discarded()) {
    throw Error(path_ + ": the plan of run " + std::to_string(run_id) +
                " is not JSON: the database is damaged");
  }
  return plan;
}

}  // namespace fedsgd
