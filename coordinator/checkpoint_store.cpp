// CheckpointStore on the SQLite C API (see checkpoint_store.h).
#include "checkpoint_store.h"

#include <sqlite3.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// "FSGD": marks the file as ours (PRAGMA application_id).
constexpr int kApplicationId = 0x46534744;
constexpr int kSchemaVersion = 1;

constexpr const char* kSchema = R"sql(
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  plan TEXT NOT NULL,
  created_at REAL NOT NULL
);
CREATE TABLE rounds (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  train_loss REAL,
  test_accuracy REAL,
  test_loss REAL,
  started_at REAL,
  finished_at REAL,
  aggregate_seconds REAL,
  rejected_updates INTEGER,
  bytes_in INTEGER,
  devices TEXT NOT NULL,
  PRIMARY KEY (run_id, round)
);
CREATE TABLE checkpoints (
  run_id INTEGER NOT NULL REFERENCES runs(id),
  round INTEGER NOT NULL,
  params BLOB NOT NULL,
  PRIMARY KEY (run_id, round)
);
)sql";

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A prepared statement that finalises itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) Fail("prepare");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int i, std::int64_t v) { return Check(sqlite3_bind_int64(stmt_, i, v)); }
  Statement& Bind(int i, std::uint64_t v) { return Bind(i, static_cast<std::int64_t>(v)); }
  Statement& Bind(int i, double v) { return Check(sqlite3_bind_double(stmt_, i, v)); }
  Statement& Bind(int i, const std::string& v) {
    return Check(
        sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Statement& Bind(int i, const std::optional<double>& v) {
    return v ? Bind(i, *v) : Check(sqlite3_bind_null(stmt_, i));
  }
  Statement& BindFloats(int i, std::span<const float> v) {
    static_assert(std::endian::native == std::endian::little,
                  "checkpoints are stored as little-endian float32");
    return Check(sqlite3_bind_blob64(stmt_, i, v.data(), v.size_bytes(), SQLITE_STATIC));
  }
  // True while there is a row.
  bool Step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    Fail("step");
  }
  std::int64_t Int(int c) const { return sqlite3_column_int64(stmt_, c); }
  double Double(int c) const { return sqlite3_column_double(stmt_, c); }
  std::optional<double> MaybeDouble(int c) const {
    if (sqlite3_column_type(stmt_, c) == SQLITE_NULL) return std::nullopt;
    return Double(c);
  }
  std::string Text(int c) const {
    const auto* p = sqlite3_column_text(stmt_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, c)) : "";
  }
  std::vector<float> Floats(int c) const {
    const int bytes = sqlite3_column_bytes(stmt_, c);
    if (bytes % static_cast<int>(sizeof(float)) != 0) {
      throw Error(path_ + ": a checkpoint's weights are " + std::to_string(bytes) +
                  " bytes, not whole floats: the database is damaged");
    }
    std::vector<float> out(static_cast<std::size_t>(bytes) / sizeof(float));
    if (bytes > 0)
      std::memcpy(out.data(), sqlite3_column_blob(stmt_, c), static_cast<std::size_t>(bytes));
    return out;
  }

 private:
  Statement& Check(int rc) {
    if (rc != SQLITE_OK) Fail("bind");
    return *this;
  }
  [[noreturn]] void Fail(const char* what) {
    throw Error(path_ + ": SQLite " + what + " failed: " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
};

void Exec(sqlite3* db, const std::string& path, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    throw Error(path + ": " + msg);
  }
}

std::int64_t PragmaInt(sqlite3* db, const std::string& path, const char* pragma) {
  Statement s(db, path, pragma);
  return s.Step() ? s.Int(0) : 0;
}

RoundRecord ReadRound(const Statement& s) {
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
  const nlohmann::json devices = nlohmann::json::parse(s.Text(10), nullptr, false);
  if (devices.is_array()) {
    for (const auto& d : devices) {
      if (!d.is_object()) continue;
      r.devices.push_back({d.value("device", ""), d.value("samples", std::uint64_t{0}),
                           d.value("loss", 0.0), d.value("train_seconds", 0.0)});
    }
  }
  return r;
}

constexpr const char* kRoundColumns =
    "run_id, round, train_loss, test_accuracy, test_loss, started_at, finished_at, "
    "aggregate_seconds, rejected_updates, bytes_in, devices";

}  // namespace

nlohmann::json RoundRecord::ToJson() const {
  nlohmann::json devs = nlohmann::json::array();
  for (const DeviceContribution& d : devices) {
    devs.push_back({{"device", d.device},
                    {"samples", d.samples},
                    {"loss", d.loss},
                    {"train_seconds", d.train_seconds}});
  }
  nlohmann::json j = {{"run_id", run_id},
                      {"round", round},
                      {"devices", devs},
                      {"train_loss", train_loss},
                      {"test_accuracy", nullptr},
                      {"test_loss", nullptr},
                      {"started_at", started_at},
                      {"finished_at", finished_at},
                      {"seconds", finished_at - started_at},
                      {"aggregate_seconds", aggregate_seconds},
                      {"rejected_updates", rejected_updates},
                      {"bytes_in", bytes_in}};
  if (test_accuracy) j["test_accuracy"] = *test_accuracy;
  if (test_loss) j["test_loss"] = *test_loss;
  return j;
}

CheckpointStore::CheckpointStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}

CheckpointStore::~CheckpointStore() { sqlite3_close_v2(db_); }

std::unique_ptr<CheckpointStore> CheckpointStore::Open(const std::string& path, bool read_only) {
  const bool existed = std::filesystem::exists(path) && std::filesystem::file_size(path) > 0;
  if (read_only && !existed) throw Error(path + ": no such database");
  sqlite3* db = nullptr;
  const int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  if (sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    throw Error(path + ": cannot open the database: " + msg);
  }
  std::unique_ptr<CheckpointStore> store(new CheckpointStore(db, path));
  sqlite3_busy_timeout(db, 5000);
  sqlite3_extended_result_codes(db, 1);
  try {
    // Reading the schema is the first real access: a file that is not
    // SQLite fails here with SQLITE_NOTADB.
    const std::int64_t tables =
        PragmaInt(db, path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'");
    const std::int64_t app = PragmaInt(db, path, "PRAGMA application_id");
    if (tables > 0 || app != 0) {
      if (app != kApplicationId) {
        throw Error(path +
                    ": this SQLite database belongs to another application "
                    "(application_id " +
                    std::to_string(app) +
                    "), not to fedsgd; "
                    "choose another --db file");
      }
      const std::int64_t version = PragmaInt(db, path, "PRAGMA user_version");
      if (version > kSchemaVersion) {
        throw Error(path + ": written by a newer fedsgd (schema " + std::to_string(version) +
                    ", this one knows " + std::to_string(kSchemaVersion) + ")");
      }
      Statement check(db, path, "PRAGMA quick_check");
      const std::string verdict = check.Step() ? check.Text(0) : "no answer";
      if (verdict != "ok") throw Error(path + ": the database is damaged (" + verdict + ")");
    }
    if (!read_only) {
      Exec(db, path,
           "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
           "PRAGMA foreign_keys = ON;");
      if (tables == 0) {
        Exec(db, path, "BEGIN IMMEDIATE");
        Exec(db, path, kSchema);
        Exec(db, path,
             ("PRAGMA application_id = " + std::to_string(kApplicationId) +
              "; PRAGMA user_version = " + std::to_string(kSchemaVersion) + ";")
                 .c_str());
        Exec(db, path, "COMMIT");
      }
    }
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.find("file is not a database") != std::string::npos ||
        msg.find("malformed") != std::string::npos) {
      throw Error(path + ": not a fedsgd database, or a damaged one (" + msg + ")");
    }
    throw;
  }
  return store;
}

RunState CheckpointStore::StartRun(const nlohmann::json& plan,
                                   const std::vector<float>& initial_params, bool new_run) {
  std::lock_guard lock(mutex_);
  RunState state;
  {
    Statement newest(db_, path_, "SELECT id, plan FROM runs ORDER BY id DESC LIMIT 1");
    if (newest.Step() && !new_run) {
      const std::int64_t id = newest.Int(0);
      const nlohmann::json stored = nlohmann::json::parse(newest.Text(1), nullptr, false);
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
    Statement latest(db_, path_,
                     "SELECT round, params FROM checkpoints WHERE run_id = ? "
                     "ORDER BY round DESC LIMIT 1");
    latest.Bind(1, state.run_id);
    if (!latest.Step())
      throw Error(path_ + ": run " + std::to_string(state.run_id) + " has no checkpoint");
    state.round = static_cast<std::uint64_t>(latest.Int(0));
    state.params = latest.Floats(1);
    if (state.params.size() != initial_params.size()) {
      throw Error(path_ + ": the checkpoint of round " + std::to_string(state.round) + " has " +
                  std::to_string(state.params.size()) + " parameters, the model needs " +
                  std::to_string(initial_params.size()) + ": the database is damaged");
    }
    return state;
  }
  Exec(db_, path_, "BEGIN IMMEDIATE");
  try {
    Statement run(db_, path_, "INSERT INTO runs (plan, created_at) VALUES (?, ?)");
    run.Bind(1, plan.dump()).Bind(2, UnixNow()).Step();
    state.run_id = sqlite3_last_insert_rowid(db_);
    Statement cp(db_, path_, "INSERT INTO checkpoints (run_id, round, params) VALUES (?, 0, ?)");
    cp.Bind(1, state.run_id).BindFloats(2, initial_params).Step();
    Exec(db_, path_, "COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  state.plan = plan;
  state.params = initial_params;
  return state;
}

void CheckpointStore::CommitRound(const RoundRecord& r, std::span<const float> params) {
  std::lock_guard lock(mutex_);
  Exec(db_, path_, "BEGIN IMMEDIATE");
  try {
    Statement latest(db_, path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
    latest.Bind(1, r.run_id);
    const std::uint64_t newest = latest.Step() ? static_cast<std::uint64_t>(latest.Int(0)) : 0;
    if (r.round != newest + 1) {
      throw Error(path_ + ": cannot commit round " + std::to_string(r.round) + " of run " +
                  std::to_string(r.run_id) + ": the newest committed round is " +
                  std::to_string(newest));
    }
    nlohmann::json devices = r.ToJson()["devices"];
    Statement rec(
        db_, path_,
        "INSERT INTO rounds (run_id, round, train_loss, test_accuracy, test_loss, "
        "started_at, finished_at, aggregate_seconds, rejected_updates, bytes_in, devices) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    rec.Bind(1, r.run_id).Bind(2, r.round).Bind(3, r.train_loss).Bind(4, r.test_accuracy);
    rec.Bind(5, r.test_loss).Bind(6, r.started_at).Bind(7, r.finished_at);
    rec.Bind(8, r.aggregate_seconds).Bind(9, r.rejected_updates).Bind(10, r.bytes_in);
    rec.Bind(11, devices.dump()).Step();
    Statement cp(db_, path_, "INSERT INTO checkpoints (run_id, round, params) VALUES (?, ?, ?)");
    cp.Bind(1, r.run_id).Bind(2, r.round).BindFloats(3, params).Step();
    Exec(db_, path_, "COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<RoundRecord> CheckpointStore::ListRounds(std::int64_t run_id, std::uint64_t since,
                                                     std::size_t limit) const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_,
              (std::string("SELECT ") + kRoundColumns +
               " FROM rounds WHERE run_id = ? AND round > ? ORDER BY round LIMIT ?")
                  .c_str());
  s.Bind(1, run_id).Bind(2, since).Bind(3, static_cast<std::int64_t>(limit));
  std::vector<RoundRecord> out;
  while (s.Step()) out.push_back(ReadRound(s));
  return out;
}

std::optional<RoundRecord> CheckpointStore::GetRound(std::int64_t run_id,
                                                     std::uint64_t round) const {
  std::lock_guard lock(mutex_);
  Statement s(
      db_, path_,
      (std::string("SELECT ") + kRoundColumns + " FROM rounds WHERE run_id = ? AND round = ?")
          .c_str());
  s.Bind(1, run_id).Bind(2, round);
  if (!s.Step()) return std::nullopt;
  return ReadRound(s);
}

std::optional<std::vector<float>> CheckpointStore::LoadParams(std::int64_t run_id,
                                                              std::uint64_t round) const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, "SELECT params FROM checkpoints WHERE run_id = ? AND round = ?");
  s.Bind(1, run_id).Bind(2, round);
  if (!s.Step()) return std::nullopt;
  return s.Floats(0);
}

std::uint64_t CheckpointStore::LatestRound(std::int64_t run_id) const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, "SELECT max(round) FROM checkpoints WHERE run_id = ?");
  s.Bind(1, run_id);
  return s.Step() ? static_cast<std::uint64_t>(s.Int(0)) : 0;
}

std::int64_t CheckpointStore::LatestRunId() const {
  std::lock_guard lock(mutex_);
  Statement s(db_, path_, "SELECT max(id) FROM runs");
  return s.Step() ? s.Int(0) : 0;
}

}  // namespace fedsgd
