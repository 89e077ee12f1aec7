// CheckpointStore: resume, plans, paging, refusal of bad or damaged files,
// concurrent readers, and atomicity of a round's commit when the writing
// process is SIGKILLed at an arbitrary instant.
#include "checkpoint_store.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "fedsgd/error.h"
#include "fedsgd/plan.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

// A raw SQLite connection, for looking at (and breaking) the file behind
// the store's back.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) ADD_FAILURE() << sqlite3_errmsg(db_);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  void Exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK)
      ADD_FAILURE() << sql << ": " << (err ? err : "?");
    sqlite3_free(err);
  }
  // The first column of the first row, as text ("" when there is none).
  std::string Query(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

class CheckpointStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_store_" + std::to_string(::getpid()) + "_" +
            std::to_string(std::random_device{}()) + "_" +
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
    r.devices = {{"dev0", 100, 0.5, 1.0, std::nullopt, std::nullopt},
                 {"dev1", 300, 0.25, 2.0, std::nullopt, std::nullopt}};
    r.train_loss = 0.3125;
    r.test_accuracy = 0.5 + 0.01 * static_cast<double>(round);
    r.started_at = 1000.0 + static_cast<double>(round);
    r.finished_at = r.started_at + 0.5;
    r.aggregate_seconds = 0.001;
    r.rejected_updates = round % 3;
    r.bytes_in = 4096;
    return r;
  }
  static std::vector<float> Params(float v, std::size_t n = 1000) {
    return std::vector<float>(n, v);
  }
  // Every bit pattern matters, NaN payloads, -0 and subnormals included.
  static std::vector<float> Bits(std::uint32_t seed, std::size_t n = 1000) {
    std::vector<float> out(n);
    std::uint32_t x = seed * 2654435761u + 1;
    for (float& f : out) {
      x = x * 1664525u + 1013904223u;
      f = std::bit_cast<float>(x);
    }
    out[0] = -0.0f;
    out[1] = std::bit_cast<float>(0x7fc12345u);  // a NaN with a payload
    out[2] = std::bit_cast<float>(0x00000001u);  // the smallest subnormal
    return out;
  }
  static bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  }
  static std::string ErrorOf(const std::string& path, bool read_only = false) {
    try {
      CheckpointStore::Open(path, read_only);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  // A store with run 1 and rounds 1..n committed, closed again.
  void MakeRounds(std::uint64_t n) {
    auto store = CheckpointStore::Open(path_);
    const auto run = store->StartRun(plan_, Params(0), false).run_id;
    for (std::uint64_t r = 1; r <= n; ++r)
      store->CommitRound(Record(run, r), Params(static_cast<float>(r)));
  }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  fs::path dir_;
  std::string path_;
  const nlohmann::json plan_ = {{"model", "mlp:4-3-2"}, {"lr", 0.5}};
};

TEST_F(CheckpointStoreTest, CommitsAndResumesBitIdentical) {
  std::int64_t run = 0;
  {
    auto store = CheckpointStore::Open(path_);
    RunState s = store->StartRun(plan_, Bits(0), false);
    EXPECT_FALSE(s.resumed);
    EXPECT_EQ(s.round, 0u);
    EXPECT_EQ(store->LatestRound(s.run_id), 0u);
    run = s.run_id;
    for (std::uint32_t r = 1; r <= 3; ++r) store->CommitRound(Record(run, r), Bits(r));
  }
  auto store = CheckpointStore::Open(path_);
  RunState s = store->StartRun(plan_, Bits(0), false);
  EXPECT_TRUE(s.resumed);
  EXPECT_EQ(s.run_id, run);
  EXPECT_EQ(s.plan, plan_);
  EXPECT_EQ(s.round, 3u);
  EXPECT_TRUE(SameBits(s.params, Bits(3)));

  // Round numbers continue where the last process stopped.
  EXPECT_THROW(store->CommitRound(Record(run, 3), Bits(3)), Error);
  store->CommitRound(Record(run, 4), Bits(4));
  EXPECT_EQ(store->LatestRound(run), 4u);
  for (std::uint32_t r = 0; r <= 4; ++r) {
    const auto params = store->LoadParams(run, r);
    ASSERT_TRUE(params) << "round " << r;
    EXPECT_TRUE(SameBits(*params, Bits(r))) << "round " << r;
  }
  EXPECT_FALSE(store->LoadParams(run, 9));
  EXPECT_FALSE(store->LoadParams(run + 1, 0));

  const auto r2 = store->GetRound(run, 2);
  ASSERT_TRUE(r2);
  const RoundRecord want = Record(run, 2);
  EXPECT_EQ(r2->run_id, run);
  EXPECT_EQ(r2->round, 2u);
  ASSERT_EQ(r2->devices.size(), 2u);
  EXPECT_EQ(r2->devices[1].device, "dev1");
  EXPECT_EQ(r2->devices[1].samples, 300u);
  EXPECT_EQ(r2->devices[1].loss, 0.25);
  EXPECT_EQ(r2->devices[1].train_seconds, 2.0);
  EXPECT_EQ(r2->train_loss, want.train_loss);
  EXPECT_EQ(r2->test_accuracy, want.test_accuracy);
  EXPECT_FALSE(r2->test_loss);
  EXPECT_EQ(r2->started_at, want.started_at);
  EXPECT_EQ(r2->finished_at, want.finished_at);
  EXPECT_EQ(r2->aggregate_seconds, want.aggregate_seconds);
  EXPECT_EQ(r2->rejected_updates, want.rejected_updates);
  EXPECT_EQ(r2->bytes_in, want.bytes_in);
  EXPECT_FALSE(store->GetRound(run, 0)) << "round 0 is the initial model, without a record";
  EXPECT_FALSE(store->GetRound(run, 5));

  RawDb raw(path_);
  EXPECT_EQ(raw.Query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.Query("PRAGMA application_id"), std::to_string(0x46534744));
  EXPECT_EQ(raw.Query("PRAGMA user_version"), "2");
  EXPECT_TRUE(r2->privacy.is_null()) << "no differential privacy, no privacy record";
  EXPECT_TRUE(r2->ToJson()["privacy"].is_null());
}

TEST_F(CheckpointStoreTest, PrivacyRecordRoundTripsWithoutItsStateInTheApi) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  RoundRecord r = Record(run, 1);
  r.privacy = {{"epsilon", 1.5}, {"delta", 1e-5}, {"rounds", 1}, {"state", {{"clip", {0.5}}}}};
  store->CommitRound(r, Params(1));
  const auto back = store->GetRound(run, 1);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->privacy, r.privacy);
  const nlohmann::json api = back->ToJson()["privacy"];
  EXPECT_EQ(api["epsilon"], 1.5);
  EXPECT_FALSE(api.contains("state"));
  RawDb(path_).Exec("UPDATE rounds SET privacy = 'not json'");
  EXPECT_THROW(store->GetRound(run, 1), Error);
}

TEST_F(CheckpointStoreTest, UpgradesASchemaOneFileInPlace) {
  MakeRounds(2);
  {
    // What fedsgd before the privacy column wrote.
    RawDb raw(path_);
    raw.Exec(
        "ALTER TABLE rounds DROP COLUMN privacy; ALTER TABLE rounds DROP COLUMN aggregation; "
        "DROP TABLE server_state; PRAGMA user_version = 1");
  }
  {
    auto reader = CheckpointStore::Open(path_, /*read_only=*/true);
    const auto r = reader->GetRound(1, 2);
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->privacy.is_null());
    EXPECT_EQ(reader->ListRounds(1, 0, 10).size(), 2u);
  }
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), "1") << "a reader changed the file";
  auto store = CheckpointStore::Open(path_);
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), "2");
  const RunState resumed = store->StartRun(plan_, Params(0), false);
  EXPECT_EQ(resumed.round, 2u);
  RoundRecord r = Record(1, 3);
  r.privacy = {{"epsilon", 2.0}};
  store->CommitRound(r, Params(3));
  EXPECT_EQ(store->GetRound(1, 3)->privacy, r.privacy);
  EXPECT_TRUE(store->GetRound(1, 1)->privacy.is_null());
}

// Federated evaluation lives in the devices column: it reads back as sent
// and the round's federated figures are derived from it again.
TEST_F(CheckpointStoreTest, DeviceEvaluationsRoundTripAndDeriveTheFederatedView) {
  auto store = CheckpointStore::Open(path_);
  const RunState run = store->StartRun(plan_, Params(0), false);
  RoundRecord r = Record(run.run_id, 1);
  r.devices[0].evaluation = wire::HeldOutEvaluation{0.5, 0.9, 100};
  r.devices[1].evaluation = wire::HeldOutEvaluation{1.5, 0.5, 300};
  RoundRecord plain = Record(run.run_id, 2);
  store->CommitRound(r, Params(1));
  store->CommitRound(plain, Params(2));
  const auto rounds = store->ListRounds(run.run_id, 0, 10);
  ASSERT_EQ(rounds.size(), 2u);
  ASSERT_TRUE(rounds[0].devices[1].evaluation.has_value());
  EXPECT_DOUBLE_EQ(rounds[0].devices[1].evaluation->accuracy, 0.5);
  EXPECT_EQ(rounds[0].devices[1].evaluation->samples, 300u);
  const nlohmann::json j = rounds[0].ToJson();
  EXPECT_DOUBLE_EQ(j.at("federated_accuracy").get<double>(), (0.9 * 100 + 0.5 * 300) / 400);
  EXPECT_DOUBLE_EQ(j.at("federated_loss").get<double>(), (0.5 * 100 + 1.5 * 300) / 400);
  EXPECT_DOUBLE_EQ(j.at("federated_accuracy_min").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j.at("federated_accuracy_max").get<double>(), 0.9);
  EXPECT_EQ(j.at("federated_samples").get<std::uint64_t>(), 400u);
  EXPECT_EQ(j.at("devices")[0].at("eval_accuracy").get<double>(), 0.9);
  EXPECT_FALSE(rounds[1].devices[0].evaluation.has_value());
  EXPECT_TRUE(rounds[1].ToJson().at("federated_accuracy").is_null());
  EXPECT_FALSE(rounds[1].ToJson().at("devices")[0].contains("eval_accuracy"));
}

TEST_F(CheckpointStoreTest, PersonalisedEvaluationsRoundTripAndSummarise) {
  auto store = CheckpointStore::Open(path_);
  const RunState run = store->StartRun(plan_, Params(0), false);
  RoundRecord r = Record(run.run_id, 1);
  r.devices.push_back({"dev2", 50, 0.5, 1.0, std::nullopt, std::nullopt});
  r.devices[0].evaluation = wire::HeldOutEvaluation{0.5, 0.75, 100};
  r.devices[0].personal = wire::HeldOutEvaluation{0.25, 0.875, 100};  // better
  r.devices[1].evaluation = wire::HeldOutEvaluation{1.5, 0.5, 300};
  r.devices[1].personal = wire::HeldOutEvaluation{1.75, 0.25, 300};  // worse
  r.devices[2].evaluation = wire::HeldOutEvaluation{1.5, 0.5, 50};   // no personal one
  store->CommitRound(r, Params(1));
  const auto back = store->GetRound(run.run_id, 1);
  ASSERT_TRUE(back.has_value());
  ASSERT_TRUE(back->devices[1].personal.has_value());
  EXPECT_DOUBLE_EQ(back->devices[1].personal->accuracy, 0.25);
  EXPECT_DOUBLE_EQ(back->devices[1].personal->loss, 1.75);
  EXPECT_EQ(back->devices[1].personal->samples, 300u);
  EXPECT_FALSE(back->devices[2].personal.has_value());
  const nlohmann::json p = back->ToJson().at("personalisation");
  EXPECT_EQ(p.at("devices"), 2) << "devices that reported both";
  EXPECT_DOUBLE_EQ(p.at("global_accuracy").get<double>(), (0.75 + 0.5) / 2);
  EXPECT_DOUBLE_EQ(p.at("personal_accuracy").get<double>(), (0.875 + 0.25) / 2);
  EXPECT_EQ(p.at("worse"), 1);
  EXPECT_DOUBLE_EQ(p.at("worse_share").get<double>(), 0.5);
  EXPECT_TRUE(Record(run.run_id, 2).ToJson().at("personalisation").is_null());
}

// A plan stored before prox_mu / eval_fraction existed resumes under today's
// plan with their defaults, and only with those.
TEST_F(CheckpointStoreTest, PlanStoredWithoutNewerKeysResumesWithTheirDefaults) {
  auto store = CheckpointStore::Open(path_);
  nlohmann::json old = Plan{}.ToJson();
  old.erase("prox_mu");
  old.erase("eval_fraction");
  const RunState first = store->StartRun(old, Params(0), false);
  const RunState again = store->StartRun(Plan{}.ToJson(), Params(0), false);
  EXPECT_TRUE(again.resumed);
  EXPECT_EQ(again.run_id, first.run_id);
  Plan prox;
  prox.prox_mu = 0.01;
  EXPECT_THROW(store->StartRun(prox.ToJson(), Params(0), false), Error);
}

TEST_F(CheckpointStoreTest, DifferentPlanIsRefusedUnlessNewRun) {
  auto store = CheckpointStore::Open(path_);
  const RunState first = store->StartRun(plan_, Params(0), false);
  EXPECT_EQ(first.run_id, 1);
  store->CommitRound(Record(first.run_id, 1), Params(1));
  EXPECT_EQ(store->StartRun(plan_, Params(0), false).round, 1u) << "the same plan resumes";

  nlohmann::json other = plan_;
  other["lr"] = 0.125;
  try {
    store->StartRun(other, Params(0), false);
    ADD_FAILURE() << "a different plan was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path_), std::string::npos) << what;
    EXPECT_NE(what.find("--new-run"), std::string::npos) << what;
    EXPECT_NE(what.find("0.125"), std::string::npos) << "the requested plan: " << what;
    EXPECT_NE(what.find("0.5"), std::string::npos) << "the stored plan: " << what;
  }
  EXPECT_EQ(store->LatestRunId(), first.run_id) << "the refusal created nothing";

  const RunState second = store->StartRun(other, Params(1), true);
  EXPECT_EQ(second.run_id, 2);
  EXPECT_FALSE(second.resumed);
  EXPECT_EQ(second.round, 0u);
  EXPECT_EQ(store->LatestRunId(), 2);
  EXPECT_EQ(store->LatestRound(2), 0u);
  EXPECT_EQ(store->LatestRound(1), 1u) << "the old run is kept";
  EXPECT_EQ(*store->LoadParams(1, 1), Params(1));

  // The newest run is now the one to resume, and the old plan is refused.
  EXPECT_EQ(store->StartRun(other, Params(1), false).run_id, 2);
  EXPECT_THROW(store->StartRun(plan_, Params(0), false), Error);
}

TEST_F(CheckpointStoreTest, ResumingWithAnotherModelSizeIsRefused) {
  MakeRounds(1);
  auto store = CheckpointStore::Open(path_);
  try {
    store->StartRun(plan_, Params(0, 999), false);
    ADD_FAILURE() << "a checkpoint of 1000 floats was resumed for a model of 999";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("1000"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointStoreTest, ListsRoundsInPages) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  for (std::uint64_t r = 1; r <= 10; ++r)
    store->CommitRound(Record(run, r), Params(static_cast<float>(r)));
  auto page = store->ListRounds(run, 0, 4);
  ASSERT_EQ(page.size(), 4u);
  EXPECT_EQ(page.front().round, 1u);
  EXPECT_EQ(page.back().round, 4u);

  // Paging with since = the last round seen visits each round once, in order.
  std::vector<std::uint64_t> seen;
  for (std::uint64_t since = 0;;) {
    page = store->ListRounds(run, since, 3);
    if (page.empty()) break;
    for (const RoundRecord& r : page) seen.push_back(r.round);
    since = page.back().round;
  }
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));

  page = store->ListRounds(run, 8, 100);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page.back().round, 10u);
  EXPECT_EQ(page.back().test_accuracy, Record(run, 10).test_accuracy);
  EXPECT_TRUE(store->ListRounds(run, 10, 5).empty());
  EXPECT_TRUE(store->ListRounds(run, 0, 0).empty());
  EXPECT_TRUE(store->ListRounds(run + 1, 0, 5).empty());
  // Numbers beyond SQLite's int64 (a URL's ?since=) are no rounds, not "all".
  EXPECT_TRUE(store->ListRounds(run, UINT64_MAX, 5).empty());
  EXPECT_FALSE(store->GetRound(run, UINT64_MAX));
  EXPECT_FALSE(store->LoadParams(run, UINT64_MAX));
  EXPECT_EQ(store->ListRounds(run, 0, SIZE_MAX).size(), 10u);
}

TEST_F(CheckpointStoreTest, RefusedCommitChangesNothing) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  store->CommitRound(Record(run, 1), Params(1));
  RawDb raw(path_);
  const auto snapshot = [&] {
    return raw.Query("SELECT count(*) FROM rounds") + "/" +
           raw.Query("SELECT count(*) FROM checkpoints") + "/" +
           raw.Query("SELECT group_concat(round) FROM checkpoints") + "/" +
           raw.Query("SELECT sum(length(params)) FROM checkpoints");
  };
  const std::string before = snapshot();
  EXPECT_EQ(before, "1/2/0,1/8000");

  try {
    store->CommitRound(Record(run, 3), Params(3));
    ADD_FAILURE() << "round 3 was accepted after round 1";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("newest committed round is 1"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(store->CommitRound(Record(run, 1), Params(1)), Error);
  EXPECT_THROW(store->CommitRound(Record(run, 0), Params(1)), Error);
  EXPECT_THROW(store->CommitRound(Record(run, 2), Params(2, 999)), Error) << "wrong size";
  EXPECT_THROW(store->CommitRound(Record(run + 7, 1), Params(1)), Error) << "no such run";
  EXPECT_EQ(snapshot(), before);
  EXPECT_EQ(store->LatestRound(run), 1u);
  EXPECT_FALSE(store->GetRound(run, 2));
  EXPECT_FALSE(store->GetRound(run, 3));

  // The refusals left no transaction open: the next round commits.
  store->CommitRound(Record(run, 2), Params(2));
  EXPECT_EQ(store->LatestRound(run), 2u);
}

TEST_F(CheckpointStoreTest, RefusesFilesThatAreNotOurs) {
  const std::string prose = "hello, this is not a database, just some text\n";
  const std::string text = Write("text.db", prose);
  std::string error = ErrorOf(text);
  EXPECT_NE(error.find(text), std::string::npos) << error;
  EXPECT_NE(error.find("not a fedsgd database"), std::string::npos) << error;
  EXPECT_EQ(fs::file_size(text), prose.size()) << "the refused file was modified";

  std::string noise(8192, '\0');
  std::mt19937 rng(7);
  for (char& c : noise) c = static_cast<char>(rng());
  const std::string random = Write("random.db", noise);
  error = ErrorOf(random);
  EXPECT_NE(error.find(random), std::string::npos) << error;
  EXPECT_NE(error.find("not a fedsgd database"), std::string::npos) << error;

  // Another application's database: tables, application_id 0.
  const std::string foreign = (dir_ / "foreign.db").string();
  {
    RawDb raw(foreign);
    raw.Exec("CREATE TABLE invoices (id INTEGER); INSERT INTO invoices VALUES (1);");
  }
  error = ErrorOf(foreign);
  EXPECT_NE(error.find(foreign), std::string::npos) << error;
  EXPECT_NE(error.find("another application"), std::string::npos) << error;
  EXPECT_EQ(RawDb(foreign).Query("SELECT count(*) FROM sqlite_master"), "1") << "it was modified";

  // ... or one that marks itself with its own application_id.
  const std::string marked = (dir_ / "marked.db").string();
  RawDb(marked).Exec("PRAGMA application_id = 1234");
  error = ErrorOf(marked);
  EXPECT_NE(error.find("application_id 1234"), std::string::npos) << error;

  // Ours, but from a newer fedsgd.
  MakeRounds(1);
  RawDb(path_).Exec("PRAGMA user_version = 3");
  error = ErrorOf(path_);
  EXPECT_NE(error.find(path_), std::string::npos) << error;
  EXPECT_NE(error.find("newer fedsgd"), std::string::npos) << error;
  EXPECT_NE(ErrorOf(path_, /*read_only=*/true).find("newer fedsgd"), std::string::npos);

  const std::string missing = (dir_ / "missing.db").string();
  EXPECT_NE(ErrorOf(missing, /*read_only=*/true).find("no such database"), std::string::npos);
  EXPECT_FALSE(fs::exists(missing)) << "a read-only open created the file";
  EXPECT_NE(ErrorOf((dir_ / "no-dir" / "x.db").string()).find("cannot open"), std::string::npos);
}

TEST_F(CheckpointStoreTest, AnEmptyFileBecomesADatabase) {
  Write("run.db", "");  // e.g. made by mktemp
  auto store = CheckpointStore::Open(path_);
  EXPECT_EQ(store->StartRun(plan_, Params(0), false).run_id, 1);
}

TEST_F(CheckpointStoreTest, RefusesATruncatedFile) {
  MakeRounds(10);
  ASSERT_FALSE(fs::exists(path_ + "-wal")) << "closing should have folded the WAL in";
  const auto size = fs::file_size(path_);
  ASSERT_GT(size, 4096u * 8);
  for (const auto keep : {size / 2, std::uintmax_t{4096 * 3 + 100}, std::uintmax_t{50}}) {
    const std::string copy = (dir_ / ("cut" + std::to_string(keep) + ".db")).string();
    fs::copy_file(path_, copy);
    fs::resize_file(copy, keep);
    const std::string error = ErrorOf(copy);
    EXPECT_NE(error.find(copy), std::string::npos) << "cut to " << keep << ": " << error;
    EXPECT_NE(error.find("damaged"), std::string::npos) << "cut to " << keep << ": " << error;
  }
}

TEST_F(CheckpointStoreTest, DetectsAPageOverwrittenWithGarbage) {
  MakeRounds(5);
  // The last connection's close folds the WAL into the file, so the page
  // overwritten below is the one SQLite will read.
  ASSERT_FALSE(fs::exists(path_ + "-wal"));
  {
    std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 2);
    std::mt19937 rng(11);
    for (int i = 0; i < 4096; ++i) f.put(static_cast<char>(rng()));
  }
  const std::string error = ErrorOf(path_);
  EXPECT_NE(error.find(path_), std::string::npos) << error;
  EXPECT_NE(error.find("damaged"), std::string::npos)
      << "a damaged database was opened: '" << error << "'";
  EXPECT_NE(ErrorOf(path_, /*read_only=*/true).find("damaged"), std::string::npos);
}

TEST_F(CheckpointStoreTest, AWeightBlobOfTheWrongSizeIsAnError) {
  MakeRounds(3);
  RawDb(path_).Exec("UPDATE checkpoints SET params = x'01020304050607' WHERE round = 2");
  auto store = CheckpointStore::Open(path_);
  EXPECT_EQ(*store->LoadParams(1, 1), Params(1));
  try {
    store->LoadParams(1, 2);
    ADD_FAILURE() << "a 7-byte blob was loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("damaged"), std::string::npos) << e.what();
  }
  // Whole floats but too few of them: damage all the same.
  RawDb(path_).Exec("UPDATE checkpoints SET params = x'0000803f' WHERE round = 3");
  EXPECT_THROW(store->LoadParams(1, 3), Error);
  EXPECT_THROW(store->StartRun(plan_, Params(0), false), Error) << "resuming from it";
}

TEST_F(CheckpointStoreTest, ReadersRunWhileRoundsCommit) {
  auto store = CheckpointStore::Open(path_);
  const auto run = store->StartRun(plan_, Params(0), false).run_id;
  std::atomic<bool> done{false};
  std::atomic<int> reads{0};
  std::string failure;
  // One reader shares the writer's instance (its mutex), the other has its
  // own read-only connection, as the HTTP side does.
  const auto read = [&](const CheckpointStore& s) {
    try {
      while (!done) {
        const std::uint64_t latest = s.LatestRound(run);
        const auto params = s.LoadParams(run, latest);
        if (!params || *params != Params(static_cast<float>(latest)))
          throw std::runtime_error("round " + std::to_string(latest) + " read torn weights");
        const auto rounds = s.ListRounds(run, 0, 100);
        if (rounds.size() < latest)
          throw std::runtime_error("round " + std::to_string(latest) + " without its record");
        ++reads;
      }
    } catch (const std::exception& e) {
      failure = e.what();
    }
  };
  std::string ro_failure;
  std::jthread shared([&] { read(*store); });
  std::jthread own([&] {
    try {
      const auto ro = CheckpointStore::Open(path_, /*read_only=*/true);
      read(*ro);
    } catch (const std::exception& e) {
      ro_failure = e.what();
    }
  });
  for (std::uint64_t r = 1; r <= 50; ++r)
    store->CommitRound(Record(run, r), Params(static_cast<float>(r)));
  done = true;
  shared.join();
  own.join();
  EXPECT_EQ(failure, "");
  EXPECT_EQ(ro_failure, "");
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(store->LatestRound(run), 50u);
}

// Runs in the forked child: commits rounds of a 400 KB model forever,
// writing one byte to `ready` after the first commit.
[[noreturn]] void CommitForever(const std::string& path, const nlohmann::json& plan, int ready) {
  try {
    auto store = CheckpointStore::Open(path);
    const auto run = store->StartRun(plan, std::vector<float>(100000, 0.0f), false).run_id;
    for (std::uint64_t r = 1;; ++r) {
      RoundRecord rec;
      rec.run_id = run;
      rec.round = r;
      rec.devices = {{"dev0", r, 0.5, 1.0, std::nullopt, std::nullopt}};
      store->CommitRound(rec, std::vector<float>(100000, static_cast<float>(r)));
      if (r == 1 && write(ready, "x", 1) != 1) _exit(3);
    }
  } catch (...) {
    _exit(2);  // never return into the test framework in the child
  }
}

TEST_F(CheckpointStoreTest, KilledWriterLosesAtMostTheRoundInFlight) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(pipe_fds[0]);
    CommitForever(path_, plan_, pipe_fds[1]);
  }
  close(pipe_fds[1]);
  pollfd ready{pipe_fds[0], POLLIN, 0};
  const bool started = poll(&ready, 1, 30000) == 1 && (ready.revents & POLLIN);
  close(pipe_fds[0]);
  // Kill it ~200 ms into the loop: mid-transaction, most likely mid-write.
  if (started) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(started) << "the child committed nothing in 30 s";
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child stopped by itself (status " << status << ")";

  auto store = CheckpointStore::Open(path_);
  {
    RawDb raw(path_);
    EXPECT_EQ(raw.Query("PRAGMA integrity_check"), "ok");
    // Records and weights come in pairs: no round has one without the other.
    EXPECT_EQ(raw.Query("SELECT count(*) FROM rounds r LEFT JOIN checkpoints c "
                        "USING (run_id, round) WHERE c.round IS NULL"),
              "0");
    EXPECT_EQ(raw.Query("SELECT count(*) FROM checkpoints c LEFT JOIN rounds r "
                        "USING (run_id, round) WHERE r.round IS NULL AND c.round > 0"),
              "0");
  }
  const RunState s = store->StartRun(plan_, std::vector<float>(100000, 0.0f), false);
  ASSERT_TRUE(s.resumed);
  ASSERT_GE(s.round, 1u);
  EXPECT_EQ(s.params, std::vector<float>(100000, static_cast<float>(s.round)));
  for (std::uint64_t r = 1; r <= s.round; ++r) {
    const auto rec = store->GetRound(s.run_id, r);
    ASSERT_TRUE(rec) << "round " << r << " has weights but no record";
    EXPECT_EQ(rec->devices.at(0).samples, r);
    ASSERT_TRUE(store->LoadParams(s.run_id, r)) << "round " << r << " has a record but no weights";
  }
  EXPECT_FALSE(store->GetRound(s.run_id, s.round + 1));
  // The resumed store carries on from there.
  RoundRecord next;
  next.run_id = s.run_id;
  next.round = s.round + 1;
  store->CommitRound(next, std::vector<float>(100000, 1.0f));
  std::cout << "[          ] killed after round " << s.round << "\n";
}

TEST_F(CheckpointStoreTest, UpgradesASchemaVersion1FileInPlace) {
  {
    RawDb raw(path_);
    raw.Exec(
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, plan TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE rounds (run_id INTEGER NOT NULL REFERENCES runs(id), round INTEGER NOT NULL,"
        " train_loss REAL, test_accuracy REAL, test_loss REAL, started_at REAL, finished_at REAL,"
        " aggregate_seconds REAL, rejected_updates INTEGER, bytes_in INTEGER,"
        " devices TEXT NOT NULL, PRIMARY KEY (run_id, round));"
        "CREATE TABLE checkpoints (run_id INTEGER NOT NULL REFERENCES runs(id),"
        " round INTEGER NOT NULL, params BLOB NOT NULL, PRIMARY KEY (run_id, round));"
        "PRAGMA application_id = 1179862852; PRAGMA user_version = 1;");
    raw.Exec("INSERT INTO runs VALUES (1, '" + plan_.dump() + "', 0)");
    raw.Exec("INSERT INTO checkpoints VALUES (1, 0, zeroblob(4000)), (1, 1, zeroblob(4000))");
    raw.Exec("INSERT INTO rounds VALUES (1, 1, 0.5, NULL, NULL, 1, 2, 0.1, 0, 10, '[]')");
  }
  {
    // Read-only it is read as it is, without the new column.
    auto reader = CheckpointStore::Open(path_, /*read_only=*/true);
    const auto rounds = reader->ListRounds(1, 0, 10);
    ASSERT_EQ(rounds.size(), 1u);
    EXPECT_TRUE(rounds[0].aggregation.is_null());
  }
  auto store = CheckpointStore::Open(path_);
  EXPECT_EQ(RawDb(path_).Query("PRAGMA user_version"), "2");
  const RunState run = store->StartRun(plan_, Params(0), false);
  EXPECT_TRUE(run.resumed);
  EXPECT_EQ(run.round, 1u);
  EXPECT_TRUE(run.state.empty());
  ASSERT_EQ(store->GetRound(1, 1)->aggregation, nullptr);
  RoundRecord r = Record(1, 2);
  r.aggregation = {{"rule", "median"}, {"clipped", 1}};
  const ServerState state = {{"server_optimizer", {1.5, -0.0, 1e300}}, {"norm_bound", {0.25}}};
  store->CommitRound(r, Params(2), state);
  EXPECT_EQ(store->LoadState(1), state);
  EXPECT_EQ(store->GetRound(1, 2)->aggregation, r.aggregation);
  EXPECT_EQ(store->ListRounds(1, 0, 10).back().ToJson()["aggregation"]["rule"], "median");
  store.reset();
  auto again = CheckpointStore::Open(path_);
  EXPECT_EQ(again->StartRun(plan_, Params(0), false).state, state) << "resume returns the state";
  again->CommitRound(Record(1, 3), Params(3), {{"norm_bound", {0.5}}});
  EXPECT_EQ(again->LoadState(1), (ServerState{{"norm_bound", {0.5}}})) << "only the newest kept";
}

TEST_F(CheckpointStoreTest, APlanStoredWithoutTheNewFieldsResumesWithTheDefaults) {
  const Plan plan;
  nlohmann::json old = plan.ToJson();
  for (const char* key : {"aggregator", "trim_fraction", "byzantine", "krum_select", "norm_bound",
                          "max_device_weight", "server_optimizer", "server_momentum",
                          "server_beta1", "server_beta2", "server_tau", "aggregation_memory_mb"})
    old.erase(key);
  auto store = CheckpointStore::Open(path_);
  const auto size = plan.architecture().ParameterCount();
  store->StartRun(old, std::vector<float>(size), false);
  EXPECT_TRUE(store->StartRun(plan.ToJson(), std::vector<float>(size), false).resumed);
  Plan other;
  other.aggregator = "krum";
  EXPECT_THROW(store->StartRun(other.ToJson(), std::vector<float>(size), false), Error);
}

}  // namespace
}  // namespace fedsgd
