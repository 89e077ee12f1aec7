// The parts of a gateway (docs/protocol.md "Gateways") without processes:
// the optional `boards` of Join and Heartbeat, which plans two tiers can
// run, a RoundManager adopting its root's model and handing over its
// aggregate, the boards' scores it forwards, a store taking the root's
// checkpoint, and the gateway flags.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <utility>

#include "aggregator.h"
#include "checkpoint_store.h"
#include "coordinator_args.h"
#include "coordinator_options.h"
#include "fedsgd/error.h"
#include "fedsgd/wire.h"
#include "gateway_scores.h"
#include "round_manager.h"
#include "two_tier_plan.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

template <typename T>
T RoundTrip(T in) {
  std::vector<zmq::message_t> frames = wire::Encode(std::move(in));
  wire::DecodeResult d = wire::Decode(frames, wire::Limits{});
  EXPECT_TRUE(d.ok()) << (d.ok() ? "" : d.error().detail);
  return std::get<T>(d.message());
}

TEST(GatewayWireTest, BoardsTravelInJoinsAndHeartbeatsAndAreAbsentFromDaemons) {
  wire::Join daemon{"dev0", 2, 100, "fedsgd-daemon"};
  EXPECT_FALSE(RoundTrip(daemon).boards.has_value());
  wire::Join gateway{"gw0", 1, 30000, "fedsgd-gateway"};
  gateway.boards = 3;
  EXPECT_EQ(RoundTrip(gateway).boards, std::optional<std::uint64_t>(3));
  wire::Heartbeat beat{"gw0", "training", 4, 10.0, 0.5, 0.25};
  EXPECT_FALSE(RoundTrip(beat).boards.has_value());
  beat.boards = 0;  // a gateway whose boards are all gone still says so
  EXPECT_EQ(RoundTrip(beat).boards, std::optional<std::uint64_t>(0));
}

TEST(GatewayWireTest, TooManyBoardsIsABadField) {
  wire::Join j{"gw0", 1, 1, "fedsgd-gateway"};
  j.boards = wire::kMaxBoards + 1;
  std::vector<zmq::message_t> frames = wire::Encode(j);
  const wire::DecodeResult d = wire::Decode(frames, wire::Limits{});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().reason, wire::RejectReason::kBadField);
}

TEST(TwoTierPlanTest, OnlyPlansThatDecomposeAreServed) {
  EXPECT_FALSE(TwoTierProblem(Plan{}).has_value());
  Plan momentum;
  momentum.server_optimizer = "momentum";
  EXPECT_FALSE(TwoTierProblem(momentum).has_value()) << "the root steps with its optimiser";
  Plan fedsgd;
  fedsgd.algorithm = Algorithm::kFedSgd;
  EXPECT_FALSE(TwoTierProblem(fedsgd).has_value()) << "gradients average like deltas";

  const auto refused = [](auto change, const std::string& words) {
    Plan p;
    change(p);
    const auto problem = TwoTierProblem(p);
    ASSERT_TRUE(problem.has_value()) << words;
    EXPECT_NE(problem->find(words), std::string::npos) << *problem;
  };
  for (const char* rule : {"median", "trimmed_mean", "krum", "multi_krum"}) {
    refused([&](Plan& p) { p.aggregator = rule; }, std::string("--aggregator ") + rule);
  }
  refused([](Plan& p) { p.dp_noise_multiplier = 1.0; }, "differential privacy");
  refused([](Plan& p) { p.mode = "async"; }, "--async");
  refused([](Plan& p) { p.clients_per_round = 10; }, "--clients-per-round");
  refused([](Plan& p) { p.update_codec = "int8"; }, "--update-codec int8");
  refused([](Plan& p) { p.max_device_weight = 100; }, "--max-device-weight");
}

TEST(TwoTierPlanTest, AGatewaysRoundsStepPlainlyWhateverTheRootsOptimiser) {
  Plan root;
  root.server_optimizer = "adam";
  root.server_lr = 0.01;
  const Plan g = GatewayRoundPlan(root);
  EXPECT_EQ(g.server_optimizer, "sgd");
  EXPECT_EQ(g.server_lr, 1.0);
  EXPECT_EQ(g.model, root.model);
}

RoundManager Manager(Plan plan, std::size_t min_devices = 2) {
  plan.model = "softmax:2-2";  // 6 parameters
  plan.norm_bound = "off";
  RoundSettings s;
  s.min_devices = min_devices;
  return RoundManager(plan, s, 1, 0, std::vector<float>(6, 1.0f), MakeAggregator(plan));
}

wire::Update Delta(const std::string& id, std::uint64_t round, std::uint64_t version, float value,
                   std::uint64_t samples) {
  return wire::Update{
      id, round, version, samples, 0.5, "delta", 1.0, std::vector<float>(6, value), std::nullopt};
}

TEST(GatewayRoundTest, TheAggregateIsTheWeightedMeanBeforeTheServerStep) {
  Plan plan;
  plan.server_lr = 0.5;
  RoundManager m = Manager(plan);
  for (const char* id : {"a", "b"}) m.devices().Join(wire::Join{id, 1, 1000, "t"}, id, "", 0);
  ASSERT_EQ(m.OpenRound(0, 0), 1u);
  ASSERT_FALSE(m.OnUpdate(Delta("a", 1, 0, 1.0f, 100), 0, 0));
  ASSERT_FALSE(m.OnUpdate(Delta("b", 1, 0, 4.0f, 300), 0, 0));
  const ClosedRound closed = m.CloseRound(0);
  ASSERT_EQ(closed.aggregate.size(), 6u);
  for (float v : closed.aggregate) EXPECT_FLOAT_EQ(v, (100 * 1.0f + 300 * 4.0f) / 400);
  for (float v : closed.params) EXPECT_FLOAT_EQ(v, 1.0f + 0.5f * 3.25f);
}

// The forwarded scores weigh each board by its held-out samples: the root,
// weighting the gateway by the sum, sees what the boards one by one give.
TEST(GatewayRoundTest, ForwardedScoresAreTheBoardsHeldOutWeightedMeans) {
  auto board = [](std::uint64_t n, double accuracy, std::optional<double> personal) {
    DeviceContribution c;
    c.samples = 10 * n;
    c.evaluation = wire::HeldOutEvaluation{1 - accuracy, accuracy, n};
    if (personal) c.personal = wire::HeldOutEvaluation{1 - *personal, *personal, n};
    return c;
  };
  DeviceContribution silent;  // sent no evaluation: counts for neither
  silent.samples = 500;
  const GatewayScores s = CombineBoardScores({board(100, 0.5, 0.9), board(300, 0.7, 0.6), silent});
  ASSERT_TRUE(s.evaluation && s.personal);
  EXPECT_EQ(s.evaluation->samples, 400u);
  EXPECT_DOUBLE_EQ(s.evaluation->accuracy, (100 * 0.5 + 300 * 0.7) / 400);
  EXPECT_DOUBLE_EQ(s.evaluation->loss, (100 * 0.5 + 300 * 0.3) / 400);
  EXPECT_EQ(s.personal->samples, 400u);
  EXPECT_DOUBLE_EQ(s.personal->accuracy, (100 * 0.9 + 300 * 0.6) / 400);
  EXPECT_DOUBLE_EQ(s.personal->loss, (100 * 0.1 + 300 * 0.4) / 400);

  // One evaluated board without a personalised score: the two would cover
  // different boards, so no personal score is forwarded.
  const GatewayScores partial = CombineBoardScores({board(100, 0.5, 0.9), board(300, 0.7, {})});
  ASSERT_TRUE(partial.evaluation);
  EXPECT_EQ(partial.evaluation->samples, 400u);
  EXPECT_FALSE(partial.personal);
  // No board evaluated: neither.
  const GatewayScores none = CombineBoardScores({silent});
  EXPECT_FALSE(none.evaluation || none.personal);
  // And both travel in the gateway's update.
  wire::Update u = Delta("g", 1, 0, 1.0f, 4000);
  u.evaluation = s.evaluation;
  u.personal = s.personal;
  const wire::Update back = RoundTrip(u);
  ASSERT_TRUE(back.evaluation && back.personal);
  EXPECT_DOUBLE_EQ(back.personal->accuracy, s.personal->accuracy);
}

TEST(GatewayRoundTest, AdoptingTheRootsModelGivesUpTheOpenRound) {
  RoundManager m = Manager(Plan{}, 1);
  m.devices().Join(wire::Join{"a", 1, 1000, "t"}, "a", "", 0);
  ASSERT_EQ(m.OpenRound(0, 0), 1u);
  ASSERT_FALSE(m.OnUpdate(Delta("a", 1, 0, 1.0f, 100), 0, 0));
  m.Adopt(7, std::vector<float>(6, 2.0f));
  EXPECT_EQ(m.version(), 7u);
  EXPECT_EQ(m.open_round(), 0u);
  EXPECT_EQ(m.params(), std::vector<float>(6, 2.0f));
  // The next round trains from the adopted version; the old one's update is gone.
  ASSERT_EQ(m.OpenRound(1, 1), 8u);
  EXPECT_EQ(m.accepted(), 0u);
  const auto stale = m.OnUpdate(Delta("a", 1, 0, 1.0f, 100), 0, 1);
  ASSERT_TRUE(stale.has_value());
  EXPECT_EQ(stale->reason, wire::RejectReason::kStaleRound);
  EXPECT_THROW(m.Adopt(8, std::vector<float>(5, 0.0f)), Error);
}

class GatewayStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_gwstore_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(GatewayStoreTest, TheRootsCheckpointLetsTheNextRoundCommit) {
  auto store = CheckpointStore::Open((dir_ / "gw.db").string());
  const RunState run = store->StartRun(Plan{}.ToJson(), std::vector<float>(10, 0.0f), false);
  store->AdoptCheckpoint(run.run_id, 5, std::vector<float>(10, 5.0f));
  EXPECT_EQ(store->LatestRound(run.run_id), 5u);
  EXPECT_EQ(*store->LoadParams(run.run_id, 5), std::vector<float>(10, 5.0f));
  EXPECT_FALSE(store->GetRound(run.run_id, 5).has_value()) << "no record: it took no part";
  RoundRecord r;
  r.run_id = run.run_id;
  r.round = 6;
  store->CommitRound(r, std::vector<float>(10, 6.0f));
  EXPECT_EQ(store->LatestRound(run.run_id), 6u);
  EXPECT_THROW(store->AdoptCheckpoint(run.run_id, 6, std::vector<float>(10, 0.0f)), Error);
  EXPECT_THROW(store->AdoptCheckpoint(run.run_id, 9, std::vector<float>(9, 0.0f)), Error);
  EXPECT_THROW(store->AdoptCheckpoint(run.run_id + 1, 9, std::vector<float>(10, 0.0f)), Error);
}

CoordinatorOptions Parse(std::vector<std::string> args) {
  return testing::ParseCoordinatorArgs(std::move(args));
}

std::string CheckError(const CoordinatorOptions& o) {
  try {
    o.CheckGateway();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(GatewayOptionsTest, PlanFlagsAreRefusedOnAGatewayOnly) {
  const CoordinatorOptions root = Parse({"--lr", "0.5", "--aggregator", "median"});
  EXPECT_FALSE(root.gateway());
  EXPECT_EQ(root.plan_flags_given.size(), 2u);
  const CoordinatorOptions gw =
      Parse({"--upstream", "tcp://127.0.0.1:7070", "--gateway-id", "gw0", "--lr", "0.5"});
  EXPECT_TRUE(gw.gateway());
  EXPECT_NE(CheckError(gw).find("--lr is a plan flag"), std::string::npos) << CheckError(gw);
  // Its own flags are fine.
  EXPECT_EQ(CheckError(
                Parse({"--upstream", "tcp://127.0.0.1:7070", "--gateway-id", "gw0", "--min-devices",
                       "3", "--round-timeout", "30", "--max-heartbeat-rate", "100"})),
            "");
}

TEST(GatewayOptionsTest, UpstreamIdAndKeysAreChecked) {
  const std::string up = "tcp://127.0.0.1:7070";
  EXPECT_NE(CheckError(Parse({"--upstream", "tcp://10.1.2.3:7070", "--gateway-id", "g"}))
                .find("--insecure"),
            std::string::npos);
  EXPECT_EQ(
      CheckError(Parse({"--upstream", "tcp://10.1.2.3:7070", "--gateway-id", "g", "--insecure"})),
      "");
  EXPECT_NE(CheckError(Parse({"--upstream", up, "--gateway-id", "no spaces"})).find("device id"),
            std::string::npos);
  EXPECT_NE(CheckError(Parse({"--upstream", up, "--gateway-id", "g", "--upstream-key", "k"}))
                .find("--upstream-server-key"),
            std::string::npos);
  EXPECT_NE(CheckError(Parse({"--upstream", "nonsense", "--gateway-id", "g"})), "");
  const CoordinatorOptions named = Parse({"--upstream", up});
  EXPECT_TRUE(wire::ValidDeviceId(named.GatewayId())) << named.GatewayId();
  EXPECT_EQ(named.GatewayId().rfind("gateway", 0), 0u) << named.GatewayId();
}

}  // namespace
}  // namespace fedsgd
