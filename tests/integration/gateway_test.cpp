// Two tiers with the real binaries (docs/protocol.md "Gateways"): a root
// coordinator, gateways (fedsgd-coordinator --upstream) and their daemons.
// The same six daemons on the same shards and seeds reach the same weights
// after 5 rounds flat and behind 2 gateways, for the weighted mean and for
// FedAvgM, and the gateways forward their boards' held-out scores; a gateway killed with -9 is left
// out of the root's rounds and, restarted on its database, resumes its run and takes part again; a
// root killed with -9 resumes with its gateways; a plan that does not decompose (median) is refused
// by the gateway with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>

#include "checkpoint_store.h"
#include "fleet_fixture.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;
using testing::kSanitized;

class GatewayTest : public FleetFixture {
 protected:
  struct Ports {
    int listen = 0, publish = 0, http = 0;
  };

  void SetUp() override {
    FleetFixture::SetUp();
    for (auto& g : gateways_) g = Ports{FreePort(), FreePort(), FreePort()};
  }

  // A gateway's flags: its own endpoints, database and HTTP; the plan
  // comes from the root.
  std::unique_ptr<Process> Gateway(int g, std::vector<std::string> extra = {}) {
    const Ports& p = gateways_[g];
    std::vector<std::string> args = {FEDSGD_COORDINATOR_BIN,
                                     "--upstream",
                                     "tcp://127.0.0.1:" + std::to_string(listen_),
                                     "--gateway-id",
                                     "gw" + std::to_string(g),
                                     "--listen",
                                     "tcp://127.0.0.1:" + std::to_string(p.listen),
                                     "--publish",
                                     "tcp://127.0.0.1:" + std::to_string(p.publish),
                                     "--http",
                                     "127.0.0.1:" + std::to_string(p.http),
                                     "--db",
                                     GatewayDb(g),
                                     "--heartbeat-ms",
                                     "200"};
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string tag = "gw" + std::to_string(g);
    return std::make_unique<Process>(args, Path(tag + ".out"), Path(tag + ".log"));
  }
  std::string GatewayDb(int g) const { return Path("gw" + std::to_string(g) + ".db"); }

  // Daemon i of n, connected to gateway g (or to the root when g < 0).
  std::unique_ptr<Process> Board(int i, int n, int g) {
    if (g < 0) return Daemon(i, n);
    const std::string id = "dev" + std::to_string(i);
    return std::make_unique<Process>(
        std::vector<std::string>{FEDSGD_DAEMON_BIN, "--coordinator",
                                 "tcp://127.0.0.1:" + std::to_string(gateways_[g].listen), "--id",
                                 id, "--data", kData, "--shard",
                                 std::to_string(i) + "/" + std::to_string(n), "--threads", "1",
                                 "--exit-when-done"},
        Path(id + ".out"), Path(id + ".log"));
  }

  nlohmann::json GetFrom(int port, const std::string& path) {
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(1, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get(path.c_str());
    if (!res || res->status != 200) return nullptr;
    return nlohmann::json::parse(res->body, nullptr, false);
  }

  static std::vector<float> Weights(const std::string& path, std::uint64_t round) {
    auto store = CheckpointStore::Open(path, /*read_only=*/true);
    auto params = store->LoadParams(store->LatestRunId(), round);
    return params ? *params : std::vector<float>{};
  }

  // The devices of one of the root's rounds.
  std::vector<std::string> RoundDevices(std::uint64_t round) {
    std::vector<std::string> ids;
    if (round == 0 || !fs::exists(db())) return ids;
    auto store = CheckpointStore::Open(db(), /*read_only=*/true);
    if (auto r = store->GetRound(store->LatestRunId(), round)) {
      for (const DeviceContribution& c : r->devices) ids.push_back(c.device);
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  std::chrono::seconds Budget() const { return kSanitized ? 400s : 150s; }

  // Runs 5 rounds of 6 daemons, flat or behind 2 gateways of 3; returns the
  // root's round-5 weights.
  std::vector<float> Fleet(bool two_tier, const std::vector<std::string>& plan) {
    std::vector<std::string> flags = {
        "--rounds", "5", "--norm-bound", "off", "--min-devices", two_tier ? "2" : "6"};
    flags.insert(flags.end(), plan.begin(), plan.end());
    fs::remove(db());
    auto root = Coordinator(two_tier ? "root2" : "flat", flags);
    std::vector<std::unique_ptr<Process>> gateways, boards;
    if (two_tier) {
      for (int g = 0; g < 2; ++g) {
        fs::remove(GatewayDb(g));
        gateways.push_back(Gateway(g, {"--min-devices", "3"}));
      }
    }
    for (int i = 0; i < 6; ++i) boards.push_back(Board(i, 6, two_tier ? i / 3 : -1));
    EXPECT_EQ(root->Wait(Budget()), 0) << root->Stderr();
    for (auto& g : gateways) EXPECT_EQ(g->Wait(30s), 0) << g->Stderr();
    for (auto& b : boards) EXPECT_EQ(b->Wait(30s), 0) << b->Stderr();
    return Weights(db(), 5);
  }

  void ExpectSameWeights(const std::vector<std::string>& plan) {
    const std::vector<float> flat = Fleet(false, plan);
    const std::vector<float> tiered = Fleet(true, plan);
    ASSERT_FALSE(flat.empty());
    ASSERT_EQ(flat.size(), tiered.size());
    const std::vector<float> start = Weights(db(), 0);
    double diff = 0, moved = 0;
    for (std::size_t i = 0; i < flat.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::fabs(flat[i] - tiered[i])));
      moved = std::max(moved, static_cast<double>(std::fabs(flat[i] - start[i])));
    }
    // Training moved the weights, and both fleets moved them alike: only
    // the order of the float sums differs.
    EXPECT_GT(moved, 0.01);
    EXPECT_LT(diff, 1e-4) << "largest weight difference, flat vs two tiers";
    std::cerr << "flat vs two tiers after 5 rounds: max |diff| " << diff << ", max |moved| "
              << moved << "\n";
  }

  Ports gateways_[2];
};

TEST_F(GatewayTest, TwoTiersGiveTheFlatFleetsWeightsWithTheWeightedMean) { ExpectSameWeights({}); }

// With federated evaluation and personalisation on (neither moves the
// global weights): each gateway records its 3 boards' scores, and the root
// records the 2 gateways' held-out-weighted means of them.
TEST_F(GatewayTest, TwoTiersGiveTheFlatFleetsWeightsWithFedAvgM) {
  ExpectSameWeights({"--server-optimizer", "momentum", "--server-momentum", "0.9",
                     "--eval-fraction", "0.1", "--personalize-steps", "5"});
  auto round5 = [](const std::string& path) {
    auto store = CheckpointStore::Open(path, /*read_only=*/true);
    return store->GetRound(store->LatestRunId(), 5);
  };
  const auto root = round5(db());
  ASSERT_TRUE(root);
  const auto p = root->personalisation();
  ASSERT_TRUE(p) << "the root records the gateways' personalised scores";
  EXPECT_EQ(p->devices, 2u);
  std::uint64_t held_out = 0;
  for (int g = 0; g < 2; ++g) {
    const auto gw = round5(GatewayDb(g));
    ASSERT_TRUE(gw);
    const auto boards = gw->personalisation();
    ASSERT_TRUE(boards);
    EXPECT_EQ(boards->devices, 3u);
    for (const DeviceContribution& c : gw->devices) held_out += c.evaluation->samples;
  }
  const auto f = root->federated_evaluation();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->samples, held_out) << "the root counts every board's held-out samples";
}

TEST_F(GatewayTest, ALostGatewayIsLeftOutAndResumesWhenRestarted) {
  // --min-devices 1: the root goes on with the gateway it has; stopped by
  // SIGTERM at the end.
  auto root =
      Coordinator("root", {"--rounds", "100000", "--min-devices", "1", "--round-timeout", "60"});
  std::vector<std::unique_ptr<Process>> boards;
  auto gw0 = Gateway(0, {"--min-devices", "2"});
  auto gw1 = Gateway(1, {"--min-devices", "2"});
  for (int i = 0; i < 4; ++i) boards.push_back(Board(i, 4, i / 2));

  const std::vector<std::string> both = {"gw0", "gw1"};
  ASSERT_TRUE(WaitFor([&] { return RoundDevices(CommittedRound()) == both; }, Budget()))
      << root->Stderr();
  // The root's API shows its gateways and the boards behind them; each
  // gateway's API shows its own boards.
  const nlohmann::json status = Get("/v1/status");
  EXPECT_EQ(status.value("gateways_online", 0), 2) << status.dump();
  EXPECT_EQ(status.value("boards_behind_gateways", 0), 4) << status.dump();
  const nlohmann::json devices = Get("/v1/devices");
  ASSERT_TRUE(devices.is_object() || devices.is_array()) << devices.dump();
  const nlohmann::json& list = devices.is_object() ? devices["devices"] : devices;
  for (const auto& d : list) {
    EXPECT_TRUE(d.value("gateway", false)) << d.dump();
    EXPECT_EQ(d.value("boards", 0), 2) << d.dump();
  }
  {
    httplib::Client client("127.0.0.1", http_);
    auto metrics = client.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("\nfedsgd_gateways_online 2\n"), std::string::npos);
    EXPECT_NE(metrics->body.find("\nfedsgd_boards_behind_gateways 4\n"), std::string::npos);
  }
  const nlohmann::json gw_status = GetFrom(gateways_[0].http, "/v1/status");
  EXPECT_EQ(gw_status.value("devices_online", 0), 2) << gw_status.dump();
  EXPECT_EQ(gw_status["gateway"].value("gateway_id", ""), "gw0") << gw_status.dump();

  gw1->Signal(SIGKILL);
  ASSERT_TRUE(gw1->Wait(5s).has_value());
  // The root marks gw1 offline after ~3 s of silence and closes its rounds
  // with gw0 alone.
  const std::uint64_t killed_at = CommittedRound();
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::uint64_t r = CommittedRound();
        return r > killed_at + 1 && RoundDevices(r) == std::vector<std::string>{"gw0"};
      },
      Budget()))
      << root->Stderr();

  // Restarted on its database, gw1 resumes its run (no new run) and its
  // boards come back to it: a later round of the root counts it again.
  gw1 = Gateway(1, {"--min-devices", "2"});
  const std::uint64_t restarted_at = CommittedRound();
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::uint64_t r = CommittedRound();
        return r > restarted_at && RoundDevices(r) == both;
      },
      Budget()))
      << root->Stderr() << gw1->Stderr();
  EXPECT_EQ(gw1->Stderr().find("starting a new run"), std::string::npos) << gw1->Stderr();
  {
    auto store = CheckpointStore::Open(GatewayDb(1), /*read_only=*/true);
    EXPECT_EQ(store->LatestRunId(), 1);
    EXPECT_GT(store->LatestRound(1), killed_at);
  }
  root->Signal(SIGTERM);
  EXPECT_EQ(root->Wait(30s), 0);
  EXPECT_EQ(IntegrityCheck(), "ok");
}

TEST_F(GatewayTest, ARootKilledMidRunResumesWithItsGateways) {
  const std::vector<std::string> flags = {"--rounds", "8", "--min-devices", "2"};
  auto root = Coordinator("root", flags);
  std::vector<std::unique_ptr<Process>> gateways, boards;
  for (int g = 0; g < 2; ++g) gateways.push_back(Gateway(g, {"--min-devices", "1"}));
  for (int i = 0; i < 2; ++i) boards.push_back(Board(i, 2, i));
  ASSERT_TRUE(WaitFor([&] { return CommittedRound() >= 2; }, Budget())) << root->Stderr();
  root->Signal(SIGKILL);
  ASSERT_TRUE(root->Wait(5s).has_value());
  root = Coordinator("root-again", flags);
  EXPECT_EQ(root->Wait(Budget()), 0) << root->Stderr();
  EXPECT_NE(root->Stderr().find("resumed"), std::string::npos) << root->Stderr();
  // The gateways and their boards follow the root to the end of its run.
  for (auto& g : gateways) EXPECT_EQ(g->Wait(30s), 0) << g->Stderr();
  for (auto& b : boards) EXPECT_EQ(b->Wait(30s), 0) << b->Stderr();
  EXPECT_EQ(RoundDevices(8), (std::vector<std::string>{"gw0", "gw1"}));
  EXPECT_EQ(IntegrityCheck(), "ok");
}

TEST_F(GatewayTest, SpeaksCurveToItsRootAndAnUnenrolledGatewayIsNotServed) {
  // Keys as on real machines: each side makes its pair with keygen; the root
  // enrols gw0's public key under its id, not gw1's.
  const auto keygen = [&](const std::string& name) {
    Process p({FEDSGD_COORDINATOR_BIN, "keygen", "--out", Path(name)}, Path(name + ".kg.out"),
              Path(name + ".kg.log"));
    ASSERT_EQ(p.Wait(30s), 0) << p.Stderr();
  };
  for (const char* name : {"root", "gw0", "gw1"}) keygen(name);
  fs::create_directories(dir_ / "authorized");
  fs::copy_file(Path("gw0.key"), dir_ / "authorized" / "gw0.key");
  auto root =
      Coordinator("root", {"--rounds", "3", "--min-devices", "1", "--curve-key",
                           Path("root.key_secret"), "--authorized-keys", Path("authorized")});
  auto gw0 = Gateway(
      0, {"--upstream-key", Path("gw0.key_secret"), "--upstream-server-key", Path("root.key")});
  auto gw1 = Gateway(
      1, {"--upstream-key", Path("gw1.key_secret"), "--upstream-server-key", Path("root.key")});
  auto board = Board(0, 2, 0);
  EXPECT_EQ(root->Wait(Budget()), 0) << root->Stderr();
  EXPECT_EQ(gw0->Wait(30s), 0) << gw0->Stderr();
  EXPECT_EQ(board->Wait(30s), 0) << board->Stderr();
  EXPECT_EQ(RoundDevices(3), std::vector<std::string>{"gw0"});
  // gw1's handshakes were refused: it never got a plan, and says what to check.
  EXPECT_TRUE(gw1->running());
  EXPECT_TRUE(WaitFor(
      [&] { return gw1->Stderr().find("--upstream-server-key") != std::string::npos; }, 30s))
      << gw1->Stderr();
  EXPECT_EQ(gw1->Stderr().find("joined the root"), std::string::npos) << gw1->Stderr();
  gw1->Signal(SIGTERM);
  EXPECT_EQ(gw1->Wait(30s), 1) << "stopped before the root answered";
}

TEST_F(GatewayTest, RefusesARootPlanThatDoesNotDecompose) {
  auto root = Coordinator("root", {"--rounds", "3", "--aggregator", "median"});
  auto gw = Gateway(0);
  EXPECT_EQ(gw->Wait(kSanitized ? 120s : 30s), 1);
  EXPECT_NE(gw->Stderr().find("--aggregator median"), std::string::npos) << gw->Stderr();
  EXPECT_NE(gw->Stderr().find("only the mean"), std::string::npos) << gw->Stderr();
  root->Signal(SIGTERM);
  EXPECT_EQ(root->Wait(30s), 0);
}

TEST_F(GatewayTest, RefusesPlanFlags) {
  auto gw = Gateway(0, {"--lr", "0.5", "--rounds", "3"});
  EXPECT_EQ(gw->Wait(30s), 1);
  EXPECT_NE(gw->Stderr().find("--lr, --rounds are plan flags"), std::string::npos) << gw->Stderr();
}

}  // namespace
}  // namespace fedsgd
