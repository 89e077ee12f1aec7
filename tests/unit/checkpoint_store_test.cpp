// CheckpointStore: resume, plans, paging, refusal of bad files, concurrent
// readers, and atomicity of a round's commit when the writer is SIGKILLed.
#include "checkpoint_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_store_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "run.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  static RoundRecord Record(std::int64_t run, std::uint64_t round) {
    RoundRecord r;
    r.run_id = run;
    r.round = round;
    r.devices = {{"dev0", 100, 0.5, 1.0}, {"dev1", 300, 0.25, 2.0}};
    r.train_loss = 0.3125;
    r.test_accuracy = 0.5 + 0.01 * static_cast<double>(round);
    r.started_at = 1000.0 + static_cast<double>(round);
    r.finished_at = r.started_at + 0.5;
    r.bytes_in = 4096;
    return r;
  }
  static std::vector<float> Params(float v) { return std::vector<float>(1000, v); }
  std::string ErrorOf(const std::string& path) {
    try {
      CheckpointStore::Open(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
  std::string path_;
  const nlohmann::json plan_ = {{"model", "mlp:4-3-2"}, {"lr", 0.5}};
};

TEST_F(CheckpointStoreTest, CommitsAndResumesBitIdentical) {
  std::int64_t run = 0;
  {
    auto store = CheckpointStore::Open(path_);
    RunState s = store->StartRun(plan_, Params(0.0f), false);
    EXPECT_FALSE(s.resumed);
    EXPECT_EQ(s.round, 0u);
    run = s.run_id;
    for (std::uint64_t r = 1; r <= 3; ++r)
      store->CommitRound(Record(run, r), Params(0.1f * static_cast<float>(r)));
  }
  auto store = CheckpointStore::Open(path_);
  RunState s = store->StartRun(plan_, Params(0.0f), false);
  EXPECT_TRUE(s.resumed);
  EXPECT_EQ(s.run_id, run);
  EXPECT_EQ(s.round, 3u);
  EXPECT_EQ(s.params, Params(0.1f * 3));
  store->CommitRound(Record(run, 4), Params(4.0f));
  EXPECT_EQ(store->LatestRound(run), 4u);
  EXPECT_EQ(*store->LoadParams(run, 0), Params(0.0f));
  EXPECT_EQ(*store->LoadParams(run, 2), Params(0.2f));
  EXPECT_FALSE(store->LoadParams(run, 9));
  const auto r2 = store->GetRound(run, 2);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->devices.size(), 2u);
  EXPECT_EQ(r2->devices[1].device, "dev1");
  EXPECT_EQ(r2->devices[1].samples, 300u);
  EXPECT_DOUBLE_EQ(*r2->test_accuracy, 0.52);
}

TEST_F(CheckpointStoreTest, DifferentPlanIsRefusedUnlessNewRun) {
  auto store = CheckpointStore::Open(path_);
  const RunState first = store->StartRun(plan_, Params(0), false);
  nlohmann::json other = plan_;
  other["lr"] = 0.1;
  try {
    store->StartRun(other, Params(0), false);
    ADD_FAILURE() << "a different plan was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--new-run"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("0.1"), std::string::npos) << e.what();
  }
  const RunState second = store->StartRun(other, Params(1), true);
  EXPECT_EQ(second.run_id, first.run_id + 1);
  EXPECT_EQ(second.round, 0u);
  EXPECT_EQ(store->LatestRunId(), second.run_id);
}

TEST_F(CheckpointStoreTest, ListsRoundsInPages) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  for (std::uint64_t r = 1; r <= 10; ++r) store->CommitRound(Record(run, r), Params(1));
  auto page = store->ListRounds(run, 0, 4);
  ASSERT_EQ(page.size(), 4u);
  EXPECT_EQ(page.front().round, 1u);
  EXPECT_EQ(page.back().round, 4u);
  page = store->ListRounds(run, 8, 100);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page.back().round, 10u);
  EXPECT_TRUE(store->ListRounds(run, 10, 5).empty());
}

TEST_F(CheckpointStoreTest, OutOfOrderCommitChangesNothing) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  store->CommitRound(Record(run, 1), Params(1));
  EXPECT_THROW(store->CommitRound(Record(run, 3), Params(3)), Error);
  EXPECT_THROW(store->CommitRound(Record(run, 1), Params(1)), Error);
  EXPECT_EQ(store->LatestRound(run), 1u);
  EXPECT_FALSE(store->GetRound(run, 3));
  store->CommitRound(Record(run, 2), Params(2));
  EXPECT_EQ(store->LatestRound(run), 2u);
}

TEST_F(CheckpointStoreTest, RefusesFilesThatAreNotOurs) {
  std::ofstream(dir_ / "text.db") << "hello, this is not a database at all, just some text\n";
  EXPECT_NE(ErrorOf((dir_ / "text.db").string()).find("not a fedsgd database"), std::string::npos);

  std::ofstream random(dir_ / "random.db", std::ios::binary);
  for (int i = 0; i < 8192; ++i) random.put(static_cast<char>((i * 7919) % 251));
  random.close();
  EXPECT_FALSE(ErrorOf((dir_ / "random.db").string()).empty());

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "foreign.db").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE invoices (id INTEGER); INSERT INTO invoices VALUES (1);", nullptr,
               nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_NE(ErrorOf((dir_ / "foreign.db").string()).find("another application"), std::string::npos);
}

TEST_F(CheckpointStoreTest, DetectsACorruptedPage) {
  {
    auto store = CheckpointStore::Open(path_);
    const auto run = store->StartRun(plan_, Params(0), false).run_id;
    for (std::uint64_t r = 1; r <= 5; ++r) store->CommitRound(Record(run, r), Params(1));
  }
  {
    // Fold the WAL into the main file, then overwrite a page in the middle.
    sqlite3* db = nullptr;
    sqlite3_open(path_.c_str(), &db);
    sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;", nullptr,
                 nullptr, nullptr);
    sqlite3_close(db);
  }
  std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(4096 * 2);
  for (int i = 0; i < 4096; ++i) f.put(static_cast<char>(0xA5));
  f.close();
  const std::string error = ErrorOf(path_);
  EXPECT_FALSE(error.empty()) << "a damaged database was opened without complaint";
}

TEST_F(CheckpointStoreTest, ReadersRunWhileRoundsCommit) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  std::atomic<bool> done{false};
  std::jthread reader([&] {
    auto ro = CheckpointStore::Open(path_, /*read_only=*/true);
    while (!done) {
      const std::uint64_t latest = ro->LatestRound(run);
      ASSERT_TRUE(ro->LoadParams(run, latest));
      store->ListRounds(run, 0, 100);
    }
  });
  for (std::uint64_t r = 1; r <= 50; ++r) store->CommitRound(Record(run, r), Params(1));
  done = true;
}

TEST_F(CheckpointStoreTest, KilledWriterLosesAtMostTheRoundInFlight) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "fork() of a threaded process is not supported under TSan";
#endif
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto store = CheckpointStore::Open(path_);
    const auto run = store->StartRun(plan_, Params(0), false).run_id;
    for (std::uint64_t r = 1;; ++r)
      store->CommitRound(Record(run, r), Params(static_cast<float>(r)));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);

  auto store = CheckpointStore::Open(path_);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);

  const RunState s = store->StartRun(plan_, Params(0), false);
  ASSERT_GE(s.round, 1u) << "no round committed in 400 ms";
  EXPECT_EQ(s.params, Params(static_cast<float>(s.round)));
  for (std::uint64_t r = 1; r <= s.round; ++r) {
    ASSERT_TRUE(store->GetRound(s.run_id, r)) << "round " << r << " has weights but no record";
    ASSERT_TRUE(store->LoadParams(s.run_id, r)) << "round " << r << " has a record but no weights";
  }
}

}  // namespace
}  // namespace fedsgd
