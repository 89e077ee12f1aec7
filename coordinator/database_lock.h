// DatabaseLock: one coordinator per database file.
//
// Two coordinators on one --db would both run rounds and commit them into
// the same run. The coordinator takes an exclusive flock(2) on "<db>.lock"
// (holding its pid, for the message) before it opens the database, and
// holds it until it exits; the kernel drops it when the process dies, even
// by SIGKILL, so a crash never leaves a stale lock. Why a side file rather
// than SQLite's locking_mode=EXCLUSIVE: in WAL mode that mode keeps the
// WAL index in private memory, which would lock out the coordinator's own
// read-only HTTP connection too. `fedsgd-coordinator --check-config` and
// other readers do not take the lock. Not thread-affine; costs one fd.
#pragma once

#include <memory>
#include <string>

namespace fedsgd {

class DatabaseLock {
 public:
  // Throws fedsgd::Error "database X is in use by another coordinator (pid
  // N)" when the lock is held, or naming the lock file when it cannot be
  // created.
  static std::unique_ptr<DatabaseLock> Acquire(const std::string& db_path);
  ~DatabaseLock();
  DatabaseLock(const DatabaseLock&) = delete;
  DatabaseLock& operator=(const DatabaseLock&) = delete;

 private:
  explicit DatabaseLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace fedsgd
