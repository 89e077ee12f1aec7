// RoundManager and DeviceRegistry with a hand-driven clock: when rounds open
// and close, every refusal, offline devices, and how updates are applied.
#include "round_manager.h"

#include <gtest/gtest.h>

#include <cmath>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

using wire::RejectReason;

class RoundManagerTest : public ::testing::Test {
 protected:
  RoundManager Make(RoundSettings s, Algorithm algorithm = Algorithm::kFedAvg) {
    Plan plan;
    plan.model = "softmax:2-2";  // 6 parameters
    plan.algorithm = algorithm;
    plan.sgd.lr = 0.5f;
    plan.server_lr = 1.0;
    return RoundManager(plan, s, 1, 0, std::vector<float>(6, 1.0f), MakeAggregator("mean"));
  }
  static void Join(RoundManager& m, const std::string& id, double now) {
    m.devices().Join(wire::Join{id, 1, 1000, "test"}, "rid-" + id, "127.0.0.1", now);
  }
  static wire::Update Update(const std::string& id, std::uint64_t round, float value,
                             std::uint64_t samples = 100, std::uint64_t version = 0) {
    return wire::Update{
        id, round, version, samples, 0.5, "delta", 1.0, std::vector<float>(6, value), std::nullopt};
  }
  static RejectReason Refusal(RoundManager& m, const wire::Update& u, double now) {
    const auto r = m.OnUpdate(u, 100, now);
    EXPECT_TRUE(r.has_value()) << "accepted";
    return r ? r->reason : RejectReason::kMalformed;
  }
};

TEST_F(RoundManagerTest, OpensWhenEnoughDevicesAreOnline) {
  RoundSettings s;
  s.min_devices = 2;
  RoundManager m = Make(s);
  EXPECT_EQ(m.phase(), RunPhase::kWaiting);
  Join(m, "a", 0);
  EXPECT_FALSE(m.ShouldOpen());
  Join(m, "b", 0);
  ASSERT_TRUE(m.ShouldOpen());
  EXPECT_EQ(m.OpenRound(0, 1000), 1u);
  EXPECT_EQ(m.phase(), RunPhase::kTraining);
  EXPECT_EQ(m.participants(), 2u);
  EXPECT_FALSE(m.ShouldOpen());
}

TEST_F(RoundManagerTest, ClosesAtQuorumAndAppliesTheWeightedMean) {
  RoundSettings s;
  s.min_devices = 2;
  s.rounds = 2;
  RoundManager m = Make(s);
  Join(m, "a", 0);
  Join(m, "b", 0);
  m.OpenRound(0, 1000);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1.0f, 100), 100, 1));
  EXPECT_FALSE(m.ShouldClose(1));
  EXPECT_FALSE(m.OnUpdate(Update("b", 1, -1.0f, 300), 100, 1));
  ASSERT_TRUE(m.ShouldClose(1));
  ClosedRound closed = m.CloseRound(1001);
  EXPECT_EQ(m.phase(), RunPhase::kAggregating);
  // mean delta = (100 * 1 + 300 * -1) / 400 = -0.5, server_lr 1.
  for (float p : closed.params) EXPECT_FLOAT_EQ(p, 0.5f);
  EXPECT_EQ(m.params()[0], 1.0f) << "the model changes only on Commit";
  EXPECT_EQ(closed.record.round, 1u);
  EXPECT_EQ(closed.record.devices.size(), 2u);
  EXPECT_DOUBLE_EQ(closed.record.train_loss, 0.5);
  m.Commit(std::move(closed));
  EXPECT_EQ(m.version(), 1u);
  EXPECT_FLOAT_EQ(m.params()[0], 0.5f);
  EXPECT_EQ(m.devices().Find("a")->rounds_joined, 1u);
  EXPECT_TRUE(m.ShouldOpen());
  EXPECT_EQ(m.OpenRound(2, 1002), 2u);
}

TEST_F(RoundManagerTest, GradientUpdatesStepAgainstTheGradient) {
  RoundSettings s;
  RoundManager m = Make(s, Algorithm::kFedSgd);
  Join(m, "a", 0);
  m.OpenRound(0, 0);
  wire::Update u = Update("a", 1, 2.0f);
  u.kind = "gradient";
  EXPECT_FALSE(m.OnUpdate(u, 100, 0));
  ClosedRound closed = m.CloseRound(0);
  for (float p : closed.params) EXPECT_FLOAT_EQ(p, 1.0f - 0.5f * 2.0f);  // lr 0.5
}

TEST_F(RoundManagerTest, RefusesEveryKindOfBadUpdate) {
  RoundSettings s;
  s.min_devices = 1;
  s.quorum = 1.0;
  RoundManager m = Make(s);
  Join(m, "a", 0);
  Join(m, "b", 0);
  EXPECT_EQ(Refusal(m, Update("a", 1, 1), 0), RejectReason::kRoundClosed);  // nothing open yet
  m.OpenRound(0, 0);
  EXPECT_EQ(Refusal(m, Update("eve", 1, 1), 0), RejectReason::kUnknownDevice);
  EXPECT_EQ(Refusal(m, Update("a", 0, 1), 0), RejectReason::kStaleRound);
  EXPECT_EQ(Refusal(m, Update("a", 2, 1), 0), RejectReason::kRoundClosed);
  EXPECT_EQ(Refusal(m, Update("a", 1, 1, 100, 5), 0), RejectReason::kStaleRound);
  wire::Update gradient = Update("a", 1, 1);
  gradient.kind = "gradient";
  EXPECT_EQ(Refusal(m, gradient, 0), RejectReason::kBadField);
  wire::Update short_update = Update("a", 1, 1);
  short_update.payload.resize(3);
  EXPECT_EQ(Refusal(m, short_update, 0), RejectReason::kWrongSize);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1), 100, 0));
  EXPECT_EQ(Refusal(m, Update("a", 1, 5), 0), RejectReason::kDuplicate);

  EXPECT_EQ(m.devices().Find("a")->updates_rejected, 7u);
  EXPECT_EQ(m.devices().Find("a")->updates_accepted, 1u);
  EXPECT_EQ(m.devices().rejected_total(), 8u);
  EXPECT_EQ(m.devices().rejected_by_reason().at("stale_round"), 2u);
  // None of it reached the aggregate: the duplicate's 5s would show.
  ClosedRound closed = m.CloseRound(0);
  for (float p : closed.params) EXPECT_FLOAT_EQ(p, 2.0f);
}

TEST_F(RoundManagerTest, DeadlineClosesWithTheMinimumOrWaitsLonger) {
  RoundSettings s;
  s.min_devices = 3;
  s.min_updates = 2;
  s.round_timeout = 10;
  RoundManager m = Make(s);
  for (const char* id : {"a", "b", "c"}) Join(m, id, 0);
  m.OpenRound(0, 0);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1), 100, 1));
  EXPECT_FALSE(m.ShouldClose(11));
  EXPECT_TRUE(m.NeedsRebroadcast(11)) << "too few at the deadline: wait again";
  EXPECT_FALSE(m.NeedsRebroadcast(12)) << "the deadline moved";
  EXPECT_FALSE(m.OnUpdate(Update("b", 1, 1), 100, 12));
  EXPECT_FALSE(m.ShouldClose(15)) << "quorum is all three, the new deadline is 21";
  EXPECT_TRUE(m.ShouldClose(21.5));
}

TEST_F(RoundManagerTest, OfflineParticipantsNoLongerCountTowardsTheQuorum) {
  RoundSettings s;
  s.min_devices = 3;
  s.heartbeat_timeout = 3;
  RoundManager m = Make(s);
  for (const char* id : {"a", "b", "c"}) Join(m, id, 0);
  m.OpenRound(0, 0);
  EXPECT_EQ(m.quorum_target(), 3u);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1), 100, 2));
  EXPECT_FALSE(m.OnUpdate(Update("b", 1, 1), 100, 2));
  EXPECT_FALSE(m.ShouldClose(2));
  m.devices().Touch("a", 3.5);
  m.devices().Touch("b", 3.5);
  EXPECT_EQ(m.devices().ExpireSilent(3.5), std::vector<std::string>{"c"});
  EXPECT_EQ(m.devices().online(), 2u);
  EXPECT_EQ(m.quorum_target(), 2u);
  EXPECT_TRUE(m.ShouldClose(3.5));
  ClosedRound closed = m.CloseRound(4);
  m.Commit(std::move(closed));
  EXPECT_FALSE(m.ShouldOpen()) << "only 2 of the 3 needed devices are online";
}

TEST_F(RoundManagerTest, DiscardKeepsTheModelAndReopensTheSameRound) {
  RoundSettings s;
  RoundManager m = Make(s);
  Join(m, "a", 0);
  m.OpenRound(0, 0);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1), 100, 0));
  ClosedRound closed = m.CloseRound(0);
  m.Discard();
  EXPECT_EQ(m.version(), 0u);
  EXPECT_EQ(m.params()[0], 1.0f);
  EXPECT_EQ(m.OpenRound(1, 1), 1u);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1), 100, 1)) << "a fresh round: not a duplicate";
}

TEST_F(RoundManagerTest, ResumedManagerContinuesTheRoundNumbers) {
  Plan plan;
  plan.model = "softmax:2-2";
  RoundSettings s;
  s.rounds = 5;
  RoundManager m(plan, s, 3, 4, std::vector<float>(6), MakeAggregator("mean"));
  Join(m, "a", 0);
  EXPECT_EQ(m.OpenRound(0, 0), 5u);
  EXPECT_FALSE(m.OnUpdate(Update("a", 5, 0, 100, 4), 100, 0));
  m.Commit(m.CloseRound(0));
  EXPECT_TRUE(m.done());
  EXPECT_EQ(m.phase(), RunPhase::kDone);
  EXPECT_FALSE(m.ShouldOpen());
}

TEST_F(RoundManagerTest, RefusesMoreSamplesThanDeclaredAtJoin) {
  RoundSettings s;
  RoundManager m = Make(s);
  Join(m, "a", 0);  // 1000 samples declared
  m.OpenRound(0, 1000);
  EXPECT_EQ(Refusal(m, Update("a", 1, 1.0f, 1001), 1), RejectReason::kSamplesExceeded);
  EXPECT_EQ(Refusal(m, Update("a", 1, 1.0f, ~std::uint64_t{0}), 1), RejectReason::kSamplesExceeded);
  EXPECT_EQ(m.accepted(), 0u);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1.0f, 1000), 100, 1)) << "exactly the declared count";
}

TEST(DeviceRegistryTest, RefusesJoinsBeyondTheCapButAlwaysAdmitsKnownDevices) {
  DeviceRegistry r(3.0, /*max_devices=*/2);
  EXPECT_TRUE(r.Admits("a"));
  r.Join(wire::Join{"a", 1, 10, "v1"}, "rid-a", "", 0);
  r.Join(wire::Join{"b", 1, 10, "v1"}, "rid-b", "", 0);
  EXPECT_FALSE(r.Admits("c"));
  EXPECT_TRUE(r.Admits("a")) << "a rejoin takes no new room";
  EXPECT_EQ(r.max_devices(), 2u);
}

TEST(DeviceRegistryTest, ForgetsSilentJoinersAndDevicesLongOffline) {
  // Heartbeat timeout 3 s: a joiner silent for 3 x 3 s is forgotten; an
  // active device only after 100 s offline.
  DeviceRegistry r(3.0, 10, /*forget_offline_after=*/100);
  r.Join(wire::Join{"fake", 1, 10, "v1"}, "rid-f", "", 0);
  r.Join(wire::Join{"honest", 1, 10, "v1"}, "rid-h", "", 0);
  r.Touch("honest", 1)->active = true;  // its first heartbeat
  r.Touch("fake", 1);                   // a fetch is no sign of an honest device
  EXPECT_TRUE(r.Forget(8.9).empty());
  EXPECT_EQ(r.Forget(9.1), std::vector<std::string>{"fake"});
  EXPECT_EQ(r.Find("fake"), nullptr);
  EXPECT_EQ(r.forgotten(), 1u);
  EXPECT_TRUE(r.Admits("fake"));

  // honest goes silent at 1: offline after 4, forgotten after 101.
  EXPECT_EQ(r.ExpireSilent(5), std::vector<std::string>{"honest"});
  EXPECT_TRUE(r.Forget(100.9).empty());
  EXPECT_EQ(r.Forget(101.1), std::vector<std::string>{"honest"});
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.forgotten(), 2u);

  // A rejoin starts the silent-joiner clock again.
  r.Join(wire::Join{"again", 1, 10, "v1"}, "rid-a", "", 200);
  r.Find("again")->active = true;
  r.Join(wire::Join{"again", 1, 10, "v1"}, "rid-a2", "", 210);
  EXPECT_FALSE(r.Find("again")->active);
  EXPECT_TRUE(r.Forget(218).empty());
  EXPECT_EQ(r.Forget(219.5).size(), 1u);
}

TEST_F(RoundManagerTest, ForgottenAndOfflineDevicesDoNotCountTowardsTheQuorum) {
  RoundSettings s;
  s.min_devices = 1;
  s.quorum = 1.0;
  RoundManager m = Make(s);
  Join(m, "a", 0);
  Join(m, "fake", 0);
  m.devices().Find("a")->active = true;
  m.OpenRound(0, 1000);
  EXPECT_EQ(m.quorum_target(), 2u);
  m.devices().Touch("a", 9);
  m.devices().ExpireSilent(9.5);  // fake: silent since 0
  EXPECT_EQ(m.quorum_target(), 1u);
  EXPECT_EQ(m.devices().Forget(9.5), std::vector<std::string>{"fake"});
  EXPECT_EQ(m.quorum_target(), 1u);
  EXPECT_FALSE(m.OnUpdate(Update("a", 1, 1.0f), 100, 9.6));
  EXPECT_TRUE(m.ShouldClose(9.6));
}

TEST(DeviceRegistryTest, TracksJoinsCountsAndSilence) {
  DeviceRegistry r(3.0);
  r.Join(wire::Join{"a", 2, 500, "v1"}, "id1", "10.0.0.5", 0);
  r.Join(wire::Join{"a", 2, 500, "v1"}, "id2", "", 1);
  const DeviceInfo* a = r.Find("a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->joins, 2u);
  EXPECT_EQ(a->routing_id, "id2");
  EXPECT_EQ(a->address, "10.0.0.5");
  EXPECT_EQ(r.Touch("b", 1), nullptr);
  r.CountReject("a", RejectReason::kNonFinite);
  r.CountReject("", RejectReason::kMalformed);
  EXPECT_EQ(r.rejected_total(), 2u);
  EXPECT_EQ(a->rejected_by_reason.at("non_finite"), 1u);
  EXPECT_TRUE(r.ExpireSilent(3.5).empty());
  EXPECT_EQ(r.ExpireSilent(4.5), std::vector<std::string>{"a"});
  EXPECT_EQ(r.ToJson(4.5)[0]["state"], "offline");
  r.Touch("a", 5);
  EXPECT_EQ(r.online(), 1u);
}

TEST(DeviceRegistryTest, FindsTheSenderOfABrokenMessageByRoutingId) {
  DeviceRegistry r(3.0);
  r.Join(wire::Join{"a", 1, 10, "v1"}, "rid-a", "", 0);
  r.Join(wire::Join{"b", 1, 10, "v1"}, "rid-b", "", 0);
  ASSERT_TRUE(r.FindByRoutingId("rid-b"));
  EXPECT_EQ(r.FindByRoutingId("rid-b")->id, "b");
  EXPECT_EQ(r.FindByRoutingId("rid-x"), nullptr);
  r.Join(wire::Join{"b", 1, 10, "v1"}, "rid-b2", "", 1);  // reconnected: a new routing id
  EXPECT_EQ(r.FindByRoutingId("rid-b"), nullptr);
  EXPECT_EQ(r.FindByRoutingId("rid-b2")->id, "b");
}

}  // namespace
}  // namespace fedsgd

namespace fedsgd {
namespace {

// Differential privacy wired in: records, status and resume.
class RoundManagerPrivacyTest : public ::testing::Test {
 protected:
  static Plan DpPlan(bool adaptive) {
    Plan plan;
    plan.model = "softmax:2-2";  // 6 parameters
    plan.dp_noise_multiplier = 1.0;
    plan.dp_clip = 1.0;
    plan.dp_adaptive_clip = adaptive;
    return plan;
  }
  static RoundManager Make(const Plan& plan, std::uint64_t version = 0) {
    RoundSettings s;
    s.min_devices = 2;
    s.rounds = 10;
    return RoundManager(plan, s, 1, version, std::vector<float>(6, 0.0f), MakeAggregator("mean"));
  }
  // Opens a round for a and b, both send a delta of norm 6 x 10 = 60, closes it.
  static ClosedRound RunRound(RoundManager& m, double now) {
    for (const char* id : {"a", "b"}) {
      if (!m.devices().Find(id))
        m.devices().Join(wire::Join{id, 1, 100, "test"}, std::string("rid-") + id, "127.0.0.1",
                         now);
    }
    const std::uint64_t round = m.OpenRound(now, 1000 + now);
    for (const char* id : {"a", "b"}) {
      EXPECT_FALSE(m.OnUpdate(wire::Update{id, round, m.version(), 100, 0.5, "delta", 1.0,
                                           std::vector<float>(6, 10.0f), std::nullopt},
                              100, now));
    }
    return m.CloseRound(1000 + now);
  }
};

TEST_F(RoundManagerPrivacyTest, WithoutDpThereIsNoPrivacyRecord) {
  Plan plan = DpPlan(false);
  plan.dp_noise_multiplier = 0;
  RoundManager m = Make(plan);
  EXPECT_TRUE(m.privacy().is_null());
  EXPECT_TRUE(RunRound(m, 0).record.privacy.is_null());
}

TEST_F(RoundManagerPrivacyTest, EachRoundIsClippedNoisedAndAccounted) {
  RoundManager m = Make(DpPlan(false));
  EXPECT_EQ(m.privacy()["epsilon"], 0.0);
  EXPECT_EQ(m.privacy()["rounds"], 0);
  double last = 0;
  for (int i = 0; i < 3; ++i) {
    ClosedRound closed = RunRound(m, i);
    // Both updates clipped to norm 1: the mean has norm 1 before noise
    // of std 1 x 1 / 2 per coordinate; unclipped it would be 60.
    double norm = 0;
    for (float p : closed.params) norm += static_cast<double>(p) * p;
    EXPECT_LT(std::sqrt(norm), 12.0);
    const nlohmann::json& p = closed.record.privacy;
    ASSERT_TRUE(p.is_object());
    EXPECT_GT(p["epsilon"].get<double>(), last);
    EXPECT_EQ(p["rounds"], i + 1);
    EXPECT_EQ(p["sampling_rate"], 1.0);
    EXPECT_EQ(p["clip"], 1.0);
    EXPECT_EQ(m.privacy()["rounds"], i) << "only Commit spends the round";
    last = p["epsilon"].get<double>();
    m.Commit(std::move(closed));
    EXPECT_EQ(m.privacy()["epsilon"], last);
  }
  // q = 1, z = 1, T = 3: the Gaussian closed form rho + 2 sqrt(rho log(1/delta)).
  const double rho = 3 / 2.0;
  EXPECT_NEAR(last, rho + 2 * std::sqrt(rho * std::log(1e5)), 0.05 * last);
}

TEST_F(RoundManagerPrivacyTest, ADiscardedRoundCostsNothingAndKeepsTheClip) {
  RoundManager m = Make(DpPlan(true));
  const double clip = m.privacy()["clip"].get<double>();
  ClosedRound closed = RunRound(m, 0);
  EXPECT_NE(m.privacy()["clip"].get<double>(), clip) << "adaptive: the clip moved";
  m.Discard();
  EXPECT_EQ(m.privacy()["clip"].get<double>(), clip);
  EXPECT_EQ(m.privacy()["rounds"], 0);
}

TEST_F(RoundManagerPrivacyTest, ResumesTheClipAndTheAccountantFromTheLastRecord) {
  const Plan plan = DpPlan(true);
  RoundManager first = Make(plan);
  ClosedRound closed = RunRound(first, 0);
  const nlohmann::json record = closed.record.privacy;
  first.Commit(std::move(closed));
  closed = RunRound(first, 1);
  const nlohmann::json record2 = closed.record.privacy;
  first.Commit(std::move(closed));

  RoundManager resumed = Make(plan, 2);
  resumed.RestorePrivacy(record2);
  EXPECT_EQ(resumed.privacy(), first.privacy());
  EXPECT_EQ(resumed.privacy()["rounds"], 2);

  nlohmann::json damaged = record;
  damaged["state"]["clip"] = {-1.0};
  EXPECT_THROW(resumed.RestorePrivacy(damaged), Error);
  damaged.erase("state");
  EXPECT_THROW(resumed.RestorePrivacy(damaged), Error);
  EXPECT_EQ(resumed.privacy(), first.privacy()) << "a refused state changes nothing";
}

}  // namespace
}  // namespace fedsgd
