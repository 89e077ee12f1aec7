// The helpers of sqlite_statement.h.
#include "sqlite_statement.h"

namespace fedsgd::sqlite {

void ThrowSqlite(sqlite3* db, const std::string& path, const std::string& what) {
  const int code = sqlite3_errcode(db) & 0xff;
  const std::string msg = sqlite3_errmsg(db);
  if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) {
    throw Error(path + ": not a fedsgd database, or a damaged one (" + msg +
                "); restore a backup or choose another --db file");
  }
  throw Error(path + ": SQLite " + what + " failed: " + msg);
}

void Exec(sqlite3* db, const std::string& path, const std::string& sql) {
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK)
    ThrowSqlite(db, path, "'" + sql.substr(0, 40) + (sql.size() > 40 ? "...'" : "'"));
}

std::int64_t QueryInt(sqlite3* db, const std::string& path, const std::string& sql) {
  Statement s(db, path, sql);
  return s.Step() ? s.Int(0) : 0;
}

std::string QueryText(sqlite3* db, const std::string& path, const std::string& sql) {
  Statement s(db, path, sql);
  return s.Step() ? s.Text(0) : "";
}

}  // namespace fedsgd::sqlite
