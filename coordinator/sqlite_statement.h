// The SQLite C API as CheckpointStore uses it: errors as fedsgd::Error
// naming the file, prepared statements and transactions that clean up
// after themselves. Internal to the coordinator.
#pragma once

#include <sqlite3.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd::sqlite {

// SQLite's verdict on a failed call, as an Error naming the file. Damage and
// foreign files are worded for the person who pointed us at the file, by
// result code: the message text varies between SQLite versions.
[[noreturn]] void ThrowSqlite(sqlite3* db, const std::string& path, const std::string& what);

// A prepared statement that finalises itself.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const std::string& sql) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt_, nullptr) !=
        SQLITE_OK)
      ThrowSqlite(db_, path_, "prepare");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& Bind(int i, std::int64_t v) { return Check(sqlite3_bind_int64(stmt_, i, v)); }
  // Callers keep round numbers and counts below 2^63 (see InRange).
  Statement& Bind(int i, std::uint64_t v) { return Bind(i, static_cast<std::int64_t>(v)); }
  Statement& Bind(int i, double v) { return Check(sqlite3_bind_double(stmt_, i, v)); }
  Statement& Bind(int i, const std::string& v) {
    return Check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Statement& Bind(int i, const std::optional<double>& v) { return v ? Bind(i, *v) : BindNull(i); }
  Statement& BindNull(int i) { return Check(sqlite3_bind_null(stmt_, i)); }
  // Bound in place (SQLITE_STATIC): v must outlive the Step() that uses it.
  Statement& BindDoubles(int i, std::span<const double> v) {
    static_assert(std::endian::native == std::endian::little,
                  "server state is stored as little-endian float64");
    return Check(sqlite3_bind_blob64(stmt_, i, v.data(), v.size_bytes(), SQLITE_STATIC));
  }
  std::vector<double> Doubles(int c, const std::string& what) const {
    const void* blob = sqlite3_column_blob(stmt_, c);
    const auto bytes = static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c));
    if (bytes % sizeof(double) != 0)
      throw Error(path_ + ": " + what + " is not whole doubles: the database is damaged");
    std::vector<double> out(bytes / sizeof(double));
    if (bytes > 0) std::memcpy(out.data(), blob, bytes);
    return out;
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
    ThrowSqlite(db_, path_, "step");
  }
  bool IsNull(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::int64_t Int(int c) const { return sqlite3_column_int64(stmt_, c); }
  double Double(int c) const { return sqlite3_column_double(stmt_, c); }
  std::optional<double> MaybeDouble(int c) const {
    if (IsNull(c)) return std::nullopt;
    return Double(c);
  }
  std::string Text(int c) const {
    const auto* p = sqlite3_column_text(stmt_, c);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(stmt_, c)) : "";
  }
  // A float32 blob of exactly `expected` values; anything else is damage
  // (the writer checked the size), reported instead of read past or padded.
  std::vector<float> Floats(int c, std::int64_t expected, const std::string& what) const {
    const void* blob = sqlite3_column_blob(stmt_, c);  // before _bytes, as SQLite asks
    const std::int64_t bytes = sqlite3_column_bytes(stmt_, c);
    if (bytes != expected * static_cast<std::int64_t>(sizeof(float))) {
      throw Error(path_ + ": the weights of " + what + " are " + std::to_string(bytes) +
                  " bytes, not " + std::to_string(expected) + " floats of 4 bytes: the database " +
                  "is damaged");
    }
    std::vector<float> out(static_cast<std::size_t>(expected));
    if (bytes > 0) std::memcpy(out.data(), blob, static_cast<std::size_t>(bytes));
    return out;
  }

 private:
  Statement& Check(int rc) {
    if (rc != SQLITE_OK) ThrowSqlite(db_, path_, "bind");
    return *this;
  }
  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
};

// Runs sql, which returns no rows.
void Exec(sqlite3* db, const std::string& path, const std::string& sql);
// The first column of the first row (0 / "" without a row).
std::int64_t QueryInt(sqlite3* db, const std::string& path, const std::string& sql);
std::string QueryText(sqlite3* db, const std::string& path, const std::string& sql);

// Rolls back unless Commit() was reached, so every throw leaves the
// database as it was.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& path) : db_(db), path_(path) {
    // IMMEDIATE takes the write lock now, so a busy database fails here
    // (after busy_timeout) rather than half-way through.
    Exec(db_, path_, "BEGIN IMMEDIATE");
  }
  ~Transaction() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void Commit() {
    Exec(db_, path_, "COMMIT");
    open_ = false;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool open_ = true;
};

}  // namespace fedsgd::sqlite
