// End-to-end asynchronous mode (FedBuff, --async) with the real binaries:
//   - a fleet with a straggler (--slowdown) trains to the end; every version
//     is one buffer, the straggler's stale updates are taken, weighted;
//   - kill -9 of the coordinator mid-run and a restart: the run goes on and
//     no update is applied twice.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <utility>

#include "checkpoint_store.h"
#include "fleet_fixture.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;

class AsyncTest : public FleetFixture {
 protected:
  // Every committed (device, model version) pair, counted.
  std::map<std::pair<std::string, std::uint64_t>, int> Applied(
      const std::vector<RoundRecord>& rounds) {
    std::map<std::pair<std::string, std::uint64_t>, int> applied;
    for (const RoundRecord& r : rounds) {
      for (const DeviceContribution& c : r.devices) {
        EXPECT_TRUE(c.model_version.has_value()) << "round " << r.round << " " << c.device;
        if (c.model_version) ++applied[{c.device, *c.model_version}];
      }
    }
    return applied;
  }
};

TEST_F(AsyncTest, FleetWithAStragglerTrainsToTheEndTakingItsStaleUpdates) {
  auto coordinator = Coordinator("coordinator", {"--async", "--buffer", "2", "--rounds", "12",
                                                 "--min-devices", "3", "--max-staleness", "30"});
  auto d0 = Daemon(0, 3), d1 = Daemon(1, 3), d2 = Daemon(2, 3, {"--slowdown", "4"});
  ASSERT_TRUE(WaitFor([&] { return CommittedRound() >= 1; }, 60s)) << coordinator->Stderr();
  const nlohmann::json status = Get("/v1/status");
  ASSERT_TRUE(status.is_object());
  EXPECT_EQ(status["mode"], "async");
  EXPECT_EQ(status["plan"]["mode"], "async");
  EXPECT_EQ(status["plan"]["async_buffer"], 2);
  ASSERT_EQ(coordinator->Wait(120s), 0) << coordinator->Stderr();
  const nlohmann::json summary = nlohmann::json::parse(coordinator->Stdout());
  EXPECT_EQ(summary["round"], 12);
  EXPECT_GT(summary["test_accuracy"].get<double>(), 0.6);
  EXPECT_NE(d2->Stderr().find("SIMULATED STRAGGLER"), std::string::npos) << d2->Stderr();

  auto store = CheckpointStore::Open(db(), /*read_only=*/true);
  const auto rounds = store->ListRounds(1, 0, 100);
  ASSERT_EQ(rounds.size(), 12u);
  std::uint64_t straggler_updates = 0, stale_updates = 0;
  for (const RoundRecord& r : rounds) {
    EXPECT_EQ(r.devices.size(), 2u) << "version " << r.round << " is one buffer of 2";
    EXPECT_EQ(r.aggregation["buffer"], 2) << r.round;
    for (const DeviceContribution& c : r.devices) {
      ASSERT_TRUE(c.model_version);
      ASSERT_LT(*c.model_version, r.round);
      stale_updates += *c.model_version + 1 < r.round;
      straggler_updates += c.device == "dev2";
    }
  }
  EXPECT_GE(straggler_updates, 1u) << "the slow device's work counts";
  EXPECT_GE(stale_updates, 1u) << "a 4x slower device's updates arrive stale";
  for (const auto& [key, count] : Applied(rounds)) {
    EXPECT_EQ(count, 1) << key.first << " from version " << key.second;
  }
  for (Process* d : {d0.get(), d1.get(), d2.get()}) EXPECT_EQ(d->Wait(10s), 0) << d->Stderr();
}

TEST_F(AsyncTest, CoordinatorKilledMidBufferResumesAndAppliesNothingTwice) {
  const std::vector<std::string> args = {"--async", "--buffer",      "2", "--rounds",
                                         "16",      "--min-devices", "2"};
  auto coordinator = Coordinator("coordinator1", args);
  auto d0 = Daemon(0, 2), d1 = Daemon(1, 2);
  ASSERT_TRUE(WaitFor([&] { return CommittedRound() >= 3; }, 60s)) << coordinator->Stderr();
  coordinator->Signal(SIGKILL);
  ASSERT_EQ(coordinator->Wait(5s), 128 + SIGKILL);
  std::uint64_t committed = 0;
  {
    auto store = CheckpointStore::Open(db(), /*read_only=*/true);
    committed = store->LatestRound(1);
  }
  std::this_thread::sleep_for(1s);
  auto restarted = Coordinator("coordinator2", args);
  ASSERT_EQ(restarted->Wait(90s), 0) << restarted->Stderr();
  EXPECT_NE(restarted->Stderr().find("resumed at round " + std::to_string(committed)),
            std::string::npos)
      << restarted->Stderr();
  auto store = CheckpointStore::Open(db(), /*read_only=*/true);
  const auto rounds = store->ListRounds(1, 0, 100);
  ASSERT_EQ(rounds.size(), 16u);
  for (std::size_t i = 0; i < rounds.size(); ++i) EXPECT_EQ(rounds[i].round, i + 1);
  for (const auto& [key, count] : Applied(rounds)) {
    EXPECT_EQ(count, 1) << key.first << "'s update from version " << key.second << " was applied "
                        << count << " times";
  }
  EXPECT_EQ(IntegrityCheck(), "ok");
  for (Process* d : {d0.get(), d1.get()}) EXPECT_EQ(d->Wait(10s), 0) << d->Stderr();
}

}  // namespace
}  // namespace fedsgd
