// RoundManager in asynchronous mode (FedBuff) with a hand-driven clock:
// buffers of K updates, staleness bound and weights, one update per device
// and model version, and nothing applied twice across a restart.
#include <gtest/gtest.h>

#include <cmath>

#include "round_manager.h"

namespace fedsgd {
namespace {

using wire::RejectReason;

Plan AsyncPlan(long buffer, long max_staleness, const std::string& weight = "polynomial:0.5") {
  Plan plan;
  plan.model = "softmax:2-2";  // 6 parameters
  plan.mode = "async";
  plan.async_buffer = buffer;
  plan.max_staleness = max_staleness;
  plan.staleness_weight = weight;
  plan.Validate();
  return plan;
}

RoundManager Make(const Plan& plan, std::uint64_t version = 0, float start = 0) {
  RoundSettings s;
  s.rounds = 100;
  s.min_devices = 1;
  return RoundManager(plan, s, 1, version, std::vector<float>(6, start), MakeAggregator("mean"));
}

void Join(RoundManager& m, const std::string& id) {
  m.devices().Join(wire::Join{id, 1, 1000, "test"}, "rid-" + id, "127.0.0.1", 0);
}

// An update trained from `version` (for round version + 1).
wire::Update From(const std::string& id, std::uint64_t version, float value,
                  std::uint64_t samples = 100) {
  return wire::Update{id,          version + 1, version, samples,
                      0.5,         "delta",     1.0,     std::vector<float>(6, value),
                      std::nullopt};
}

// Closes and commits the open buffer; returns its record.
RoundRecord Step(RoundManager& m) {
  ClosedRound closed = m.CloseRound(0);
  RoundRecord record = closed.record;
  m.Commit(std::move(closed));
  if (m.ShouldOpen()) m.OpenRound(0, 0);
  return record;
}

TEST(AsyncRoundTest, EveryKUpdatesMakeAVersionAndADeviceMaySendOncePerVersion) {
  RoundManager m = Make(AsyncPlan(2, 5));
  Join(m, "a");
  Join(m, "b");
  ASSERT_TRUE(m.ShouldOpen());
  m.OpenRound(0, 0);
  EXPECT_EQ(m.quorum_target(), 2u);
  EXPECT_FALSE(m.OnUpdate(From("a", 0, 1), 100, 0));
  EXPECT_FALSE(m.ShouldClose(0)) << "one of a buffer of 2";
  const auto again = m.OnUpdate(From("a", 0, 1), 100, 0);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->reason, RejectReason::kDuplicate);
  EXPECT_FALSE(m.OnUpdate(From("b", 0, 3), 100, 0));
  ASSERT_TRUE(m.ShouldClose(0));
  const RoundRecord r1 = Step(m);
  EXPECT_EQ(m.version(), 1u);
  EXPECT_FLOAT_EQ(m.params()[0], 2.0f) << "fresh updates: the plain sample-weighted mean";
  ASSERT_EQ(r1.devices.size(), 2u);
  EXPECT_EQ(r1.devices[0].model_version, std::optional<std::uint64_t>(0));
  EXPECT_EQ(r1.aggregation["staleness_max"], 0);
  EXPECT_EQ(m.open_round(), 2u) << "the next buffer opens at once";

  // An update a device sent for version 0 is applied: refused, not counted.
  const auto applied = m.OnUpdate(From("a", 0, 1), 100, 0);
  ASSERT_TRUE(applied);
  EXPECT_EQ(applied->reason, RejectReason::kDuplicate);
  // The same device twice in one buffer, from two versions: both count.
  Join(m, "c");
  EXPECT_FALSE(m.OnUpdate(From("c", 1, 0), 100, 0));
  EXPECT_FALSE(m.ShouldClose(0));
  EXPECT_FALSE(m.OnUpdate(From("c", 0, 0), 100, 0)) << "c's older work, not sent before";
  EXPECT_TRUE(m.ShouldClose(0));
}

TEST(AsyncRoundTest, StaleUpdatesAreScaledByTheirWeightAndTooStaleOnesRefused) {
  RoundManager m = Make(AsyncPlan(1, 2, "polynomial:1"), /*version=*/5);
  Join(m, "a");
  m.OpenRound(0, 0);
  // From version 7: the coordinator is only at 5.
  auto future = m.OnUpdate(From("a", 7, 1), 100, 0);
  ASSERT_TRUE(future);
  EXPECT_EQ(future->reason, RejectReason::kBadField);
  wire::Update mislabelled = From("a", 5, 1);
  mislabelled.round = 9;
  ASSERT_TRUE(m.OnUpdate(mislabelled, 100, 0));
  auto old = m.OnUpdate(From("a", 2, 1), 100, 0);  // 3 versions old, at most 2
  ASSERT_TRUE(old);
  EXPECT_EQ(old->reason, RejectReason::kStaleRound);
  EXPECT_NE(old->detail.find("--max-staleness"), std::string::npos) << old->detail;

  // 1 version old: weight (1 + 1)^-1 = 0.5, and (FedBuff) not renormalised.
  EXPECT_FALSE(m.OnUpdate(From("a", 4, 2), 100, 0));
  const RoundRecord r = Step(m);
  EXPECT_FLOAT_EQ(m.params()[0], 1.0f);
  EXPECT_EQ(r.round, 6u);
  EXPECT_EQ(r.aggregation["staleness_max"], 1);
  EXPECT_DOUBLE_EQ(r.aggregation["staleness_mean"].get<double>(), 1.0);
  EXPECT_EQ(m.devices().Find("a")->last_staleness, 1u);
  EXPECT_EQ(r.ToJson()["devices"][0]["staleness"], 1);
}

TEST(AsyncRoundTest, AnAppliedUpdateIsRefusedAgainAlsoByARestartedCoordinator) {
  const Plan plan = AsyncPlan(1, 3);
  RoundManager m = Make(plan);
  Join(m, "a");
  Join(m, "b");
  m.OpenRound(0, 0);
  ASSERT_FALSE(m.OnUpdate(From("a", 0, 1), 100, 0));
  std::vector<RoundRecord> records{Step(m)};
  // a is unsure whether its update arrived and sends it again.
  auto resent = m.OnUpdate(From("a", 0, 1), 100, 0);
  ASSERT_TRUE(resent);
  EXPECT_EQ(resent->reason, RejectReason::kDuplicate);
  ASSERT_FALSE(m.OnUpdate(From("b", 0, 1), 100, 0)) << "b's update from version 0 is new";
  records.push_back(Step(m));

  // A restarted coordinator knows only the database.
  RoundManager restarted = Make(plan, m.version(), m.params()[0]);
  restarted.RestoreApplied(records);
  Join(restarted, "a");
  Join(restarted, "b");
  restarted.OpenRound(0, 0);
  for (const char* id : {"a", "b"}) {
    auto again = restarted.OnUpdate(From(id, 0, 1), 100, 0);
    ASSERT_TRUE(again) << id;
    EXPECT_EQ(again->reason, RejectReason::kDuplicate) << id;
  }
  EXPECT_FALSE(restarted.OnUpdate(From("a", 1, 1), 100, 0)) << "new work is taken";
}

TEST(AsyncRoundTest, AutomaticBufferIsHalfTheDevicesOnlineAndSyncIgnoresStaleness) {
  RoundManager m = Make(AsyncPlan(0, 5));
  for (const char* id : {"a", "b", "c", "d", "e"}) Join(m, id);
  m.OpenRound(0, 0);
  EXPECT_EQ(m.quorum_target(), 3u) << "ceil(5 / 2)";

  Plan sync;
  sync.model = "softmax:2-2";
  sync.staleness_weight = "constant";
  RoundManager s = Make(sync);
  Join(s, "a");
  s.OpenRound(0, 0);
  EXPECT_FALSE(s.OnUpdate(From("a", 0, 1), 100, 0));
  const RoundRecord r = Step(s);
  EXPECT_FALSE(r.devices[0].model_version.has_value()) << "sync records stay as they were";
  EXPECT_FALSE(r.aggregation.contains("staleness_mean"));
}

}  // namespace
}  // namespace fedsgd
