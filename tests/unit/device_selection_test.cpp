// Device selection (RoundManager with plan.clients_per_round / fraction),
// pace steering and upload slots (flow_control.h), with a hand-driven clock.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "flow_control.h"
#include "round_manager.h"

namespace fedsgd {
namespace {

using wire::RejectReason;

Plan SelectionPlan(long per_round, double over = 1.3) {
  Plan plan;
  plan.model = "softmax:2-2";  // 6 parameters
  plan.clients_per_round = per_round;
  plan.over_selection = over;
  return plan;
}

RoundManager Make(const Plan& plan, std::int64_t run = 1, RoundSettings s = {}) {
  s.rounds = 100;
  return RoundManager(plan, s, run, 0, std::vector<float>(6, 1.0f), MakeAggregator("mean"));
}

void JoinAll(RoundManager& m, int n) {
  for (int i = 0; i < n; ++i) {
    const std::string id = "dev" + std::to_string(i);
    m.devices().Join(wire::Join{id, 1, 1000, "test"}, "rid-" + id, "", 0);
  }
}

wire::Update Update(const std::string& id, std::uint64_t round, std::uint64_t version = 0) {
  return wire::Update{
      id, round, version, 100, 0.5, "delta", 1.0, std::vector<float>(6, 0.5f), std::nullopt};
}

std::set<std::string> Invited(const RoundManager& m) {
  std::set<std::string> out;
  for (const auto& [id, d] : m.devices().devices()) {
    if (m.Participates(id)) out.insert(id);
  }
  return out;
}

TEST(DeviceSelectionTest, InvitesOverSelectedDevicesAndClosesAtTheTarget) {
  RoundManager m = Make(SelectionPlan(10, 1.3));
  JoinAll(m, 100);
  m.OpenRound(0, 1000);
  const std::set<std::string> invited = Invited(m);
  EXPECT_EQ(invited.size(), 13u);  // ceil(1.3 x 10)
  EXPECT_EQ(m.participants(), 13u);
  EXPECT_EQ(m.quorum_target(), 10u);
  const nlohmann::json sel = m.selection();
  EXPECT_EQ(sel["online"], 100);
  EXPECT_EQ(sel["invited"], 13);
  EXPECT_EQ(sel["target"], 10);
  EXPECT_TRUE(sel["seed"].get<std::string>().starts_with("0x"));

  // A device not invited is refused, and nothing else changes.
  std::string outsider;
  for (int i = 0; outsider.empty(); ++i) {
    if (!invited.count("dev" + std::to_string(i))) outsider = "dev" + std::to_string(i);
  }
  const auto refused = m.OnUpdate(Update(outsider, 1), 100, 1);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->reason, RejectReason::kNotSelected);
  EXPECT_NE(refused->detail.find("13 of 100"), std::string::npos) << refused->detail;
  EXPECT_EQ(m.accepted(), 0u);
  EXPECT_EQ(m.devices().Find(outsider)->rejected_by_reason.at("not_selected"), 1u);

  int sent = 0;
  for (const std::string& id : invited) {
    if (sent == 10) break;
    EXPECT_FALSE(m.ShouldClose(1));
    EXPECT_FALSE(m.OnUpdate(Update(id, 1), 100, 1)) << id;
    ++sent;
  }
  EXPECT_TRUE(m.ShouldClose(1)) << "closes with 10 of the 13 invited";
  ClosedRound closed = m.CloseRound(1001);
  EXPECT_EQ(closed.record.devices.size(), 10u);
  EXPECT_EQ(closed.record.aggregation["selection"]["invited"], 13);
  EXPECT_EQ(closed.record.aggregation["selection"]["seed"], sel["seed"]);
}

TEST(DeviceSelectionTest, TheChoiceIsSeededPerRunAndRoundAndUniform) {
  // Same plan, run and round: the same devices; another round or run: others.
  RoundManager a = Make(SelectionPlan(20, 1.0)), b = Make(SelectionPlan(20, 1.0));
  RoundManager other_run = Make(SelectionPlan(20, 1.0), 2);
  for (RoundManager* m : {&a, &b, &other_run}) {
    JoinAll(*m, 200);
    m->OpenRound(0, 1000);
  }
  EXPECT_EQ(Invited(a), Invited(b));
  EXPECT_NE(Invited(a), Invited(other_run));

  // Over 400 rounds every one of the 200 devices is invited about 400 x 20
  // / 200 = 40 times; a uniform draw keeps each count within [15, 70]
  // (binomial, sd ~6; the bounds are > 4 sd away).
  std::map<std::string, int> times;
  std::set<std::set<std::string>> distinct;
  RoundManager m = Make(SelectionPlan(20, 1.0));
  JoinAll(m, 200);
  for (int round = 1; round <= 400; ++round) {
    m.OpenRound(0, 1000);
    const std::set<std::string> invited = Invited(m);
    ASSERT_EQ(invited.size(), 20u);
    distinct.insert(invited);
    for (const std::string& id : invited) ++times[id];
    for (const std::string& id : invited) {
      if (m.ShouldClose(1)) break;
      ASSERT_FALSE(m.OnUpdate(Update(id, round, round - 1), 100, 1));
    }
    ClosedRound closed = m.CloseRound(1001);
    m.Commit(std::move(closed));
  }
  EXPECT_EQ(times.size(), 200u);
  for (const auto& [id, n] : times) {
    EXPECT_GE(n, 15) << id;
    EXPECT_LE(n, 70) << id;
  }
  EXPECT_GT(distinct.size(), 390u) << "a different choice nearly every round";
}

TEST(DeviceSelectionTest, AFractionOfTheOnlineDevicesAndSmallFleets) {
  Plan fraction = SelectionPlan(0, 1.5);
  fraction.clients_fraction = 0.1;
  RoundManager m = Make(fraction);
  JoinAll(m, 95);
  m.OpenRound(0, 1000);
  EXPECT_EQ(m.quorum_target(), 10u);  // ceil(0.1 x 95)
  EXPECT_EQ(m.participants(), 15u);

  // Fewer online than ceil(over x N): every one is invited, and the round
  // closes with N of them (or all, quorum 1, when fewer than N).
  RoundManager small = Make(SelectionPlan(4, 2.0));
  JoinAll(small, 5);
  small.OpenRound(0, 1000);
  EXPECT_EQ(small.participants(), 5u);
  EXPECT_EQ(small.quorum_target(), 4u);
  RoundManager tiny = Make(SelectionPlan(4, 2.0));
  JoinAll(tiny, 3);
  tiny.OpenRound(0, 1000);
  EXPECT_EQ(tiny.participants(), 3u);
  EXPECT_EQ(tiny.quorum_target(), 3u);
}

TEST(DeviceSelectionTest, InvitedDevicesThatGoOfflineLowerTheTarget) {
  RoundSettings s;
  s.heartbeat_timeout = 3;
  RoundManager m = Make(SelectionPlan(4, 1.0), 1, s);
  JoinAll(m, 10);
  m.OpenRound(0, 1000);
  ASSERT_EQ(m.quorum_target(), 4u);
  // Every device but two invited ones stays alive.
  const std::set<std::string> chosen = Invited(m);
  const std::vector<std::string> invited(chosen.begin(), chosen.end());
  for (const auto& [id, d] : m.devices().devices()) {
    if (id != invited[0] && id != invited[1]) m.devices().Touch(id, 5);
  }
  m.devices().ExpireSilent(5);
  EXPECT_EQ(m.quorum_target(), 2u) << "quorum x the invited devices still online";
}

TEST(DeviceSelectionTest, PlanValidationNamesTheFlags) {
  auto message = [](Plan p) {
    try {
      p.Validate();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("valid");
  };
  Plan p = SelectionPlan(10);
  EXPECT_EQ(message(p), "valid");
  EXPECT_TRUE(p.selection());
  EXPECT_FALSE(Plan{}.selection()) << "off by default";
  p.over_selection = 0.9;
  EXPECT_NE(message(p).find("--over-selection"), std::string::npos);
  p = SelectionPlan(10);
  p.clients_fraction = 0.5;
  EXPECT_NE(message(p).find("exclude each other"), std::string::npos);
  p = SelectionPlan(-1);
  EXPECT_NE(message(p).find("--clients-per-round"), std::string::npos);
  p = SelectionPlan(0);
  p.clients_fraction = 1.5;
  EXPECT_NE(message(p).find("--clients-per-round"), std::string::npos);
  p = SelectionPlan(10);
  p.mode = "async";
  EXPECT_NE(message(p).find("cannot be combined with device selection"), std::string::npos);

  // In the JSON only when on, and back.
  EXPECT_EQ(Plan{}.ToJson().count("clients_per_round"), 0u);
  EXPECT_EQ(Plan{}.ToJson().count("over_selection"), 0u);
  const Plan back = Plan::FromJson(SelectionPlan(7, 1.5).ToJson());
  EXPECT_EQ(back.clients_per_round, 7);
  EXPECT_DOUBLE_EQ(back.over_selection, 1.5);
}

TEST(PaceSteeringTest, IdleIntervalGrowsWithTheFleetOnly) {
  EXPECT_EQ(IdleHeartbeatMs(1000, 10, 500, "a"), 1000) << "a small fleet keeps the base exactly";
  EXPECT_EQ(IdleHeartbeatMs(1000, 500, 500, "a"), 1000);
  // 10,000 devices at 500 heartbeats/s: each about every 20 s, jittered.
  const int ms = IdleHeartbeatMs(1000, 10000, 500, "a");
  EXPECT_GE(ms, 18000);
  EXPECT_LE(ms, 22000);
  EXPECT_NE(IdleHeartbeatMs(1000, 10000, 500, "dev1"), IdleHeartbeatMs(1000, 10000, 500, "dev2"));
  EXPECT_EQ(IdleHeartbeatMs(1000, 100000000, 1, "a"), wire::kMaxIntervalMs) << "capped";
  // Summed over a fleet, the rate is near the budget.
  double rate = 0;
  for (int i = 0; i < 10000; ++i)
    rate += 1000.0 / IdleHeartbeatMs(1000, 10000, 500, "d" + std::to_string(i));
  EXPECT_NEAR(rate, 500, 25);
}

TEST(PaceSteeringTest, SilenceAllowedFollowsTheIntervalADeviceWasGiven) {
  DeviceRegistry r(3.0);
  r.Join(wire::Join{"slow", 1, 10, "t"}, "rid", "", 0);
  r.Join(wire::Join{"base", 1, 10, "t"}, "rid2", "", 0);
  r.Find("slow")->heartbeat_ms = 20000;
  EXPECT_EQ(r.ExpireSilent(10), std::vector<std::string>{"base"});
  EXPECT_TRUE(r.Find("slow")->online) << "3 x 20 s of silence allowed";
  EXPECT_EQ(r.ExpireSilent(61), std::vector<std::string>{"slow"});
}

TEST(UploadSlotsTest, GrantsAtMostTheSlotsAndFreesThemOnArrivalOrTimeout) {
  UploadSlots slots(2, 5.0);
  EXPECT_TRUE(slots.Grant("a", 0, 10));
  EXPECT_TRUE(slots.Grant("a", 0, 10)) << "asking again keeps the grant";
  EXPECT_TRUE(slots.Grant("b", 0, 10));
  EXPECT_FALSE(slots.Grant("c", 1, 10));
  EXPECT_EQ(slots.in_use(), 2u);
  EXPECT_EQ(slots.refused(), 1u);
  slots.Release("a");  // its update arrived
  EXPECT_TRUE(slots.Grant("c", 1, 10));
  EXPECT_FALSE(slots.Grant("d", 4, 10));
  EXPECT_TRUE(slots.Grant("d", 5.5, 10)) << "b's grant ran out";
  slots.Clear();
  EXPECT_EQ(slots.in_use(), 0u);
  // No more grants than the round still needs.
  EXPECT_TRUE(slots.Grant("a", 6, 1));
  EXPECT_FALSE(slots.Grant("b", 6, 1));
  EXPECT_TRUE(slots.Grant("a", 6, 0)) << "a grant held stays";
}

TEST(UploadSlotsTest, RetryIntervalScalesWithTheQueue) {
  EXPECT_EQ(UploadRetryMs(0, 64, "a"), 20);
  const int ms = UploadRetryMs(1280, 64, "a");  // 1 s of uploads ahead
  EXPECT_GE(ms, 900);
  EXPECT_LE(ms, 1100);
  EXPECT_EQ(UploadRetryMs(1000000, 1, "a"), 5000);
}

}  // namespace
}  // namespace fedsgd
