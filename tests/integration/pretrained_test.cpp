// A pretrained start (--initial-model) with the real binaries: a second
// federation starts from the newest round of a first one's database, its
// round 0 is exactly those weights and its plan names them by SHA-256, and
// with --freeze-layers its devices fine-tune and send only the last layer;
// weights that do not fit the model are refused before anything starts.
#include <gtest/gtest.h>

#include <algorithm>

#include "checkpoint_store.h"
#include "fedsgd/npy.h"
#include "fleet_fixture.h"
#include "initial_model.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;
using testing::kSanitized;

class PretrainedTest : public FleetFixture {
 protected:
  // Runs `rounds` rounds with two daemons; returns the coordinator's summary.
  nlohmann::json Federation(const std::string& tag, std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--min-devices", "2"});
    auto coordinator = Coordinator(tag, extra);
    auto a = Daemon(0, 2);
    auto b = Daemon(1, 2);
    EXPECT_EQ(coordinator->Wait(kSanitized ? 300s : 120s), 0) << coordinator->Stderr();
    EXPECT_EQ(a->Wait(30s), 0) << a->Stderr();
    EXPECT_EQ(b->Wait(30s), 0) << b->Stderr();
    return nlohmann::json::parse(coordinator->Stdout(), nullptr, false);
  }
};

TEST_F(PretrainedTest, StartsFromAnotherRunsNewestRound) {
  const nlohmann::json first = Federation("first", {"--rounds", "3"});
  ASSERT_TRUE(first.is_object());
  std::vector<float> trained;
  {
    auto store = CheckpointStore::Open(db(), /*read_only=*/true);
    ASSERT_EQ(store->LatestRound(1), 3u);
    trained = *store->LoadParams(1, 3);
  }
  const std::string pretrained = Path("pretrained.db");
  fs::rename(db(), pretrained);
  for (const char* suffix : {"-wal", "-shm"}) {
    if (fs::exists(db() + suffix)) fs::rename(db() + suffix, pretrained + suffix);
  }

  const nlohmann::json second = Federation(
      "second", {"--rounds", "2", "--initial-model", pretrained, "--freeze-layers", "1"});
  ASSERT_TRUE(second.is_object());
  auto store = CheckpointStore::Open(db(), /*read_only=*/true);
  EXPECT_EQ(*store->LoadParams(1, 0), trained) << "round 0 is the first run's round 3";
  const nlohmann::json plan = *store->RunPlan(1);
  EXPECT_EQ(plan["initial_model"], pretrained);
  EXPECT_EQ(plan["initial_model_sha256"], Sha256Hex(trained));
  EXPECT_EQ(plan["freeze_layers"], 1);
  // mlp:784-32-10: the first layer's 784 x 32 + 32 parameters are frozen,
  // the last layer's 32 x 10 + 10 = 330 fine-tuned and sent.
  constexpr std::size_t kFrozen = 784 * 32 + 32;
  const std::vector<float> tuned = *store->LoadParams(1, 2);
  ASSERT_EQ(tuned.size(), trained.size());
  EXPECT_TRUE(std::equal(trained.begin(), trained.begin() + kFrozen, tuned.begin()))
      << "the frozen layer is as the first run left it";
  EXPECT_FALSE(std::equal(trained.begin() + kFrozen, trained.end(), tuned.begin() + kFrozen))
      << "the last layer was fine-tuned";
  for (const RoundRecord& r : store->ListRounds(1, 0, 10)) {
    ASSERT_EQ(r.devices.size(), 2u);
    EXPECT_EQ(r.rejected_updates, 0u);
    // An update of 330 floats and its header, not of 25,450.
    EXPECT_GT(r.bytes_in / 2, 330u * 4u) << r.round;
    EXPECT_LT(r.bytes_in / 2, 330u * 4u + 1024u) << r.round;
  }
  // Fine-tuning a trained model keeps it trained.
  EXPECT_GT(second["test_accuracy"].get<double>(), first["test_accuracy"].get<double>() - 0.05)
      << first.dump() << "\n"
      << second.dump();
  EXPECT_EQ(IntegrityCheck(), "ok");
}

// Label skew (each device holds 2 classes): the devices adapt every global
// model to their own data, and the rounds record both accuracies.
TEST_F(PretrainedTest, PersonalisationOnLabelSkewIsRecordedEveryRound) {
  auto coordinator =
      Coordinator("coordinator", {"--rounds", "3", "--min-devices", "4", "--personalize-steps",
                                  "30", "--personalize-layers", "last"});
  std::vector<std::unique_ptr<Process>> daemons;
  for (int i = 0; i < 4; ++i) {
    daemons.push_back(
        Daemon(i, 4, {"--split", "labels:2", "--state-dir", Path("state" + std::to_string(i))}));
  }
  ASSERT_EQ(coordinator->Wait(kSanitized ? 300s : 120s), 0) << coordinator->Stderr();
  for (auto& d : daemons) EXPECT_EQ(d->Wait(30s), 0) << d->Stderr();
  auto store = CheckpointStore::Open(db(), /*read_only=*/true);
  const auto rounds = store->ListRounds(1, 0, 10);
  ASSERT_EQ(rounds.size(), 3u);
  for (const RoundRecord& r : rounds) {
    const auto p = r.personalisation();
    ASSERT_TRUE(p.has_value()) << "round " << r.round;
    EXPECT_EQ(p->devices, 4u);
    // Two classes are far easier than ten: the adapted copies win on average.
    EXPECT_GT(p->personal_accuracy, p->global_accuracy) << "round " << r.round;
    std::cerr << "round " << r.round << ": held-out accuracy " << p->global_accuracy << " global, "
              << p->personal_accuracy << " personalised, worse on " << p->worse << "\n";
    EXPECT_LE(p->worse, p->devices);
  }
  // From the model of round 2 on, 30 steps of the last layer alone suffice.
  EXPECT_GT(rounds.back().personalisation()->personal_accuracy, 0.8);
  EXPECT_NE(coordinator->Stderr().find("personalised "), std::string::npos)
      << "the round line shows it";
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(fs::exists(Path("state" + std::to_string(i)) + "/personal.npy")) << i;
    EXPECT_NE(daemons[i]->Stderr().find("personalised; update sent"), std::string::npos)
        << daemons[i]->Stderr();
  }
}

TEST_F(PretrainedTest, WeightsThatDoNotFitAreRefusedBeforeAnythingStarts) {
  const std::string bad = Path("bad.npy");
  std::ofstream(bad, std::ios::binary) << EncodeNpy(std::vector<float>(100, 0.5f));
  auto check = Coordinator("check", {"--initial-model", bad, "--check-config"});
  EXPECT_NE(check->Wait(30s), 0);
  EXPECT_NE(check->Stderr().find("100 parameters, but model mlp:784-32-10"), std::string::npos)
      << check->Stderr();
  auto start = Coordinator("start", {"--initial-model", Path("missing.npy")});
  EXPECT_NE(start->Wait(30s), 0);
  EXPECT_NE(start->Stderr().find("no such file"), std::string::npos) << start->Stderr();
  EXPECT_FALSE(fs::exists(db())) << "refused before the database was created";
}

}  // namespace
}  // namespace fedsgd
