// End-to-end differential privacy: the real coordinator with
// --dp-noise-multiplier and real daemons on loopback. The run completes;
// /v1/status and /metrics report a finite epsilon > 0 while it runs; every
// round record carries its privacy figures, epsilon growing round by round
// as the RDP accountant says for q = 1; a restarted coordinator continues
// the account and the adaptive clip from the database.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "checkpoint_store.h"
#include "privacy_accountant.h"
#include "process.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::FreePort;
using testing::Process;

constexpr const char* kData = "/usr/share/datasets/fashion-mnist";
constexpr int kDevices = 4;
constexpr int kRounds = 3;
constexpr double kNoiseMultiplier = 0.5;

class DifferentialPrivacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData))
      GTEST_SKIP() << kData << " is missing (scripts/install-deps.sh installs it)";
    dir_ = fs::temp_directory_path() / ("fedsgd_dp_it_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    http_ = FreePort();
    listen_ = FreePort();
    publish_ = FreePort();
  }
  void TearDown() override {
    if (HasFailure()) {
      for (const auto& entry : fs::directory_iterator(dir_)) {
        if (entry.path().extension() == ".log") {
          std::ifstream in(entry.path());
          std::cerr << "---- " << entry.path().filename() << "\n" << in.rdbuf() << "\n";
        }
      }
    }
    fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  std::unique_ptr<Process> Coordinator(const std::string& tag, int rounds) {
    return std::make_unique<Process>(
        std::vector<std::string>{FEDSGD_COORDINATOR_BIN,
                                 "--listen",
                                 "tcp://127.0.0.1:" + std::to_string(listen_),
                                 "--publish",
                                 "tcp://127.0.0.1:" + std::to_string(publish_),
                                 "--http",
                                 "127.0.0.1:" + std::to_string(http_),
                                 "--db",
                                 Path("run.db"),
                                 "--model",
                                 "softmax:784-10",
                                 "--local-steps",
                                 "30",
                                 "--lr",
                                 "0.1",
                                 "--heartbeat-ms",
                                 "200",
                                 "--rounds",
                                 std::to_string(rounds),
                                 "--min-devices",
                                 std::to_string(kDevices),
                                 "--dp-noise-multiplier",
                                 std::to_string(kNoiseMultiplier),
                                 "--dp-clip",
                                 "adaptive:1.0"},
        Path(tag + ".out"), Path(tag + ".log"));
  }
  std::vector<std::unique_ptr<Process>> Daemons() {
    std::vector<std::unique_ptr<Process>> daemons;
    for (int i = 0; i < kDevices; ++i) {
      const std::string id = "dev" + std::to_string(i);
      daemons.push_back(std::make_unique<Process>(
          std::vector<std::string>{FEDSGD_DAEMON_BIN, "--coordinator",
                                   "tcp://127.0.0.1:" + std::to_string(listen_), "--id", id,
                                   "--data", kData, "--shard",
                                   std::to_string(i) + "/" + std::to_string(kDevices), "--threads",
                                   "1", "--exit-when-done"},
          Path(id + ".out"), Path(id + ".log")));
    }
    return daemons;
  }

  httplib::Result Get(const std::string& path) {
    httplib::Client client("127.0.0.1", http_);
    client.set_connection_timeout(1, 0);
    client.set_read_timeout(2, 0);
    return client.Get(path.c_str());
  }

  fs::path dir_;
  int http_ = 0, listen_ = 0, publish_ = 0;
};

TEST_F(DifferentialPrivacyTest, EpsilonIsReportedAndGrowsWithRounds) {
  auto coordinator = Coordinator("coordinator", kRounds);
  const auto daemons = Daemons();
  // Watch /v1/status and /metrics while the run goes: round -> epsilon.
  std::map<std::uint64_t, double> status_epsilon;
  bool metric_seen = false;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (!coordinator->Wait(20ms) && std::chrono::steady_clock::now() < deadline) {
    const auto res = Get("/v1/status");
    if (!res || res->status != 200) continue;
    const nlohmann::json s = nlohmann::json::parse(res->body, nullptr, false);
    if (!s.is_object() || !s["privacy"].is_object()) {
      ADD_FAILURE() << "/v1/status without privacy: " << res->body;
      break;
    }
    const nlohmann::json& p = s["privacy"];
    EXPECT_EQ(p["noise_multiplier"], kNoiseMultiplier);
    EXPECT_EQ(p["delta"], 1e-5);
    EXPECT_TRUE(p["adaptive_clip"].get<bool>());
    EXPECT_GT(p["clip"].get<double>(), 0.0);
    EXPECT_EQ(p["rounds"], s["round"]);
    status_epsilon[s["round"].get<std::uint64_t>()] = p["epsilon"].get<double>();
    if (s["round"].get<std::uint64_t>() >= 1 && !metric_seen) {
      const auto m = Get("/metrics");
      metric_seen = m && m->body.find("\nfedsgd_privacy_epsilon ") != std::string::npos;
    }
  }
  ASSERT_EQ(coordinator->Wait(10s), 0) << coordinator->Stderr();
  for (auto& d : daemons) EXPECT_EQ(d->Wait(10s), 0) << d->Stderr();

  EXPECT_EQ(status_epsilon[0], 0.0) << "nothing spent before the first round";
  std::size_t seen_after_a_round = 0;
  double last = 0;
  for (const auto& [round, epsilon] : status_epsilon) {
    if (round == 0) continue;
    EXPECT_TRUE(std::isfinite(epsilon));
    EXPECT_GT(epsilon, last) << "round " << round;
    last = epsilon;
    ++seen_after_a_round;
  }
  EXPECT_GE(seen_after_a_round, 1u) << "/v1/status never showed a committed round";
  EXPECT_TRUE(metric_seen) << "/metrics has no fedsgd_privacy_epsilon";
  EXPECT_NE(coordinator->Stderr().find("privacy: epsilon"), std::string::npos);

  // The records: each round's epsilon is the accountant's for q = 1.
  auto store = CheckpointStore::Open(Path("run.db"), /*read_only=*/true);
  const auto rounds = store->ListRounds(1, 0, 100);
  ASSERT_EQ(rounds.size(), static_cast<std::size_t>(kRounds));
  PrivacyAccountant expected;
  for (const RoundRecord& r : rounds) {
    expected.Compose(kNoiseMultiplier, 1.0);
    const nlohmann::json p = r.ToJson()["privacy"];  // as /v1/rounds serves it
    ASSERT_TRUE(p.is_object()) << "round " << r.round;
    EXPECT_NEAR(p["epsilon"].get<double>(), expected.Epsilon(1e-5), 1e-9) << "round " << r.round;
    EXPECT_EQ(p["rounds"], r.round);
    EXPECT_EQ(p["sampling_rate"], 1.0);
    EXPECT_FALSE(p.contains("state"));
    EXPECT_TRUE(p.contains("unclipped_fraction"));
    if (status_epsilon.count(r.round)) {
      EXPECT_DOUBLE_EQ(status_epsilon[r.round], p["epsilon"].get<double>());
    }
  }
}

TEST_F(DifferentialPrivacyTest, ARestartedCoordinatorContinuesTheAccountAndTheClip) {
  {
    auto first = Coordinator("coordinator1", 2);
    const auto daemons = Daemons();
    ASSERT_EQ(first->Wait(120s), 0) << first->Stderr();
    for (auto& d : daemons) EXPECT_EQ(d->Wait(10s), 0) << d->Stderr();
  }
  double clip_after_two = 0;
  {
    auto store = CheckpointStore::Open(Path("run.db"), /*read_only=*/true);
    const auto r2 = store->GetRound(1, 2);
    ASSERT_TRUE(r2 && r2->privacy.is_object());
    clip_after_two = r2->privacy.at("state").at("clip").at(0).get<double>();
  }
  // The same plan with more rounds resumes the run.
  auto second = Coordinator("coordinator2", 3);
  const auto daemons = Daemons();
  ASSERT_EQ(second->Wait(120s), 0) << second->Stderr();
  EXPECT_NE(second->Stderr().find("resumed at round 2"), std::string::npos) << second->Stderr();
  auto store = CheckpointStore::Open(Path("run.db"), /*read_only=*/true);
  const auto r3 = store->GetRound(1, 3);
  ASSERT_TRUE(r3 && r3->privacy.is_object());
  PrivacyAccountant three_rounds;
  three_rounds.Compose(kNoiseMultiplier, 1.0, 3);
  EXPECT_NEAR(r3->privacy["epsilon"].get<double>(), three_rounds.Epsilon(1e-5), 1e-9);
  EXPECT_EQ(r3->privacy["rounds"], 3);
  EXPECT_EQ(r3->privacy["clip"].get<double>(), clip_after_two) << "the clip was not resumed";
}

}  // namespace
}  // namespace fedsgd
