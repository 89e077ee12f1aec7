// DatabaseLock: a second holder is refused with the first one's pid; the
// lock is free again once the first is gone.
#include "database_lock.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

TEST(DatabaseLockTest, SecondHolderIsRefusedUntilTheFirstIsGone) {
  const std::string db = (std::filesystem::temp_directory_path() /
                          ("fedsgd_lock_" + std::to_string(::getpid()) + ".db"))
                             .string();
  {
    auto first = DatabaseLock::Acquire(db);
    try {
      DatabaseLock::Acquire(db);
      ADD_FAILURE() << "a second lock on " << db << " was granted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("is in use by another coordinator"), std::string::npos) << what;
      EXPECT_NE(what.find("pid " + std::to_string(::getpid())), std::string::npos) << what;
    }
  }
  EXPECT_NO_THROW(DatabaseLock::Acquire(db));
  std::filesystem::remove(db + ".lock");
}

TEST(DatabaseLockTest, UncreatableLockFileIsAClearError) {
  EXPECT_THROW(DatabaseLock::Acquire("/nonexistent-dir/x.db"), Error);
}

}  // namespace
}  // namespace fedsgd
