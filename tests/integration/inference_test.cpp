// The daemon's local inference endpoint (--inference-socket,
// docs/inference.md) in a real federation: a client on the "board" asks a
// training daemon for predictions over its Unix socket and gets answers from
// the newest global model as the run advances; malformed requests are
// answered 400/413 and neither the daemon nor the run notices.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <csignal>
#include <numeric>
#include <span>

#include "fedsgd/dataset.h"
#include "fleet_fixture.h"
#include "unix_line_client.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;
using testing::UnixLineClient;

class InferenceTest : public FleetFixture {
 protected:
  // The first kSamples test images as CSV rows of the model's inputs.
  void SetUp() override {
    FleetFixture::SetUp();
    if (IsSkipped()) return;
    const Dataset test = LoadDataset(kData, Split::kTest);
    std::vector<std::size_t> rows(kSamples);
    std::iota(rows.begin(), rows.end(), 0);
    std::vector<float> x(kSamples * test.num_features), y(kSamples);
    test.Gather(rows, x.data(), y.data());
    for (std::size_t i = 0; i < kSamples; ++i) {
      std::string row;
      char number[32];
      for (int f = 0; f < test.num_features; ++f) {
        std::snprintf(number, sizeof number, f ? ",%.6g" : "%.6g", x[i * test.num_features + f]);
        row += number;
      }
      rows_ += row + "\n";
      labels_.push_back(static_cast<int>(y[i]));
    }
  }

  struct Answers {
    std::uint64_t version = 0;
    double accuracy = 0;
    std::vector<nlohmann::json> probabilities;
  };
  // Every sample through one connection: the answers, all from one version.
  Answers Ask(const std::string& socket) {
    UnixLineClient c(socket);
    EXPECT_TRUE(c.connected());
    EXPECT_TRUE(c.Send(rows_));
    Answers a;
    std::size_t correct = 0;
    for (std::size_t i = 0; i < kSamples; ++i) {
      const nlohmann::json j = c.Json();
      EXPECT_EQ(j.value("index", -1), static_cast<int>(i)) << j;
      if (!j.contains("class")) return a;
      if (i == 0) a.version = j["model_version"].get<std::uint64_t>();
      correct += j["class"].get<int>() == labels_[i];
      a.probabilities.push_back(j["probabilities"]);
    }
    a.accuracy = static_cast<double>(correct) / kSamples;
    return a;
  }

  // The model the endpoint serves now (null: none yet, or no answer).
  static nlohmann::json Model(const std::string& socket) {
    UnixLineClient c(socket);
    if (!c.connected() || !c.Send("model\n")) return nullptr;
    const nlohmann::json j = c.Json();
    return j.contains("model") ? j : nullptr;
  }

  static constexpr std::size_t kSamples = 300;
  std::string rows_;
  std::vector<int> labels_;
};

TEST_F(InferenceTest, ATrainingDaemonAnswersWithTheNewestModelAndShrugsOffBadRequests) {
  const std::string socket = Path("inference.sock");
  auto coordinator = Coordinator("coordinator", {"--rounds", "3", "--min-devices", "2"});
  // The serving daemon stays up after the run (no --exit-when-done), as a
  // service does, so the final model is there to ask for.
  Process d0({FEDSGD_DAEMON_BIN, "--coordinator", "tcp://127.0.0.1:" + std::to_string(listen_),
              "--id", "dev0", "--data", kData, "--shard", "0/2", "--threads", "1", "--state-dir",
              Path("state"), "--inference-socket", socket},
             Path("dev0.out"), Path("dev0.log"));
  ASSERT_TRUE(WaitFor([&] { return fs::exists(socket); }, 60s)) << d0.Stderr();
  struct stat st {};
  ASSERT_EQ(::lstat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  // Joined, no round yet (the coordinator waits for a second device): the
  // initial model, version 0.
  ASSERT_TRUE(WaitFor([&] { return Model(socket).is_object(); }, 60s)) << d0.Stderr();
  const nlohmann::json initial = Model(socket);
  EXPECT_EQ(initial["model"], kModel);
  EXPECT_EQ(initial["model_version"], 0);
  EXPECT_EQ(initial["source"], "coordinator");
  EXPECT_EQ(initial["inputs"], 784);
  const Answers before = Ask(socket);
  ASSERT_EQ(before.probabilities.size(), kSamples);
  EXPECT_EQ(before.version, 0u);

  // Training starts; bad requests arrive while it runs.
  auto d1 = Daemon(1, 2);
  ASSERT_TRUE(WaitFor([&] { return CommittedRound() >= 1; }, 120s)) << coordinator->Stderr();
  {
    UnixLineClient bad(socket);
    ASSERT_TRUE(bad.Send("1,2,3\n" + std::string(784, 'x') + "\n" +
                         rows_.substr(0, rows_.find('\n')) + ",nan\nhello\n"));
    for (int i = 0; i < 3; ++i) {
      const nlohmann::json e = bad.Json();
      EXPECT_EQ(e["index"], i);
      EXPECT_EQ(e["status"], 400) << e;
    }
    const nlohmann::json unknown = bad.Json();
    EXPECT_EQ(unknown["status"], 400) << unknown;
    // Still answering on the same connection.
    ASSERT_TRUE(bad.Send(rows_.substr(0, rows_.find('\n') + 1)));
    EXPECT_TRUE(bad.Json().contains("class"));
    // A line past the bound (512 KiB): 413, and that connection is closed.
    // The daemon stops reading once past the bound and may close before the
    // last bytes are written, so the send may fail with EPIPE; the answer
    // is queued on this side before the close either way.
    (void)bad.Send(std::string(600 * 1024, '1'));
    EXPECT_EQ(bad.Json()["status"], 413);
    EXPECT_EQ(bad.Line(), "");
  }
  {
    UnixLineClient binary(socket);
    std::string junk(4096, '\0');
    for (std::size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<char>(i * 37 % 256);
    ASSERT_TRUE(binary.Send(junk + "\n"));
    EXPECT_EQ(binary.Json()["status"], 400);
  }

  // The run ends; the daemon took part in every round and serves the final
  // model, which predicts better than the initial one.
  ASSERT_EQ(coordinator->Wait(180s), 0) << coordinator->Stderr();
  ASSERT_EQ(d1->Wait(30s), 0) << d1->Stderr();
  ASSERT_TRUE(WaitFor([&] { return Model(socket).value("model_version", 0) == 3; }, 60s))
      << Model(socket);
  const Answers after = Ask(socket);
  ASSERT_EQ(after.probabilities.size(), kSamples);
  EXPECT_EQ(after.version, 3u);
  EXPECT_NE(after.probabilities, before.probabilities);
  EXPECT_GT(after.accuracy, before.accuracy + 0.3)
      << "initial " << before.accuracy << ", final " << after.accuracy;
  const nlohmann::json summary = nlohmann::json::parse(coordinator->Stdout());
  EXPECT_GT(after.accuracy, summary["test_accuracy"].get<double>() - 0.1);
  EXPECT_TRUE(d0.running());

  // Stopping removes the socket.
  d0.Signal(SIGTERM);
  ASSERT_EQ(d0.Wait(30s), 0) << d0.Stderr();
  EXPECT_FALSE(fs::exists(socket));
}

// --inference-model personal on label skew: once the board has fine-tuned
// a copy it answers with it, and the copy is better on the board's own
// classes than the global model it came from.
TEST_F(InferenceTest, PersonalModeServesThePersonalisedCopy) {
  const std::string socket = Path("inference.sock");
  // Many rounds, so that the run is still going while the test asks; it
  // is stopped by SIGTERM once the answers are in.
  auto coordinator = Coordinator(
      "coordinator", {"--rounds", "500", "--min-devices", "2", "--personalize-steps", "30"});
  auto d0 = Daemon(
      0, 2, {"--split", "labels:2", "--inference-socket", socket, "--inference-model", "personal"});
  auto d1 = Daemon(1, 2, {"--split", "labels:2"});
  const auto source = [&] {
    const nlohmann::json j = Model(socket);
    return j.is_object() ? j.value("source", std::string()) : std::string();
  };
  ASSERT_TRUE(WaitFor([&] { return source() == "personal"; }, testing::kSanitized ? 300s : 120s))
      << d0->Stderr();
  const Answers a = Ask(socket);
  EXPECT_EQ(a.probabilities.size(), kSamples) << "every sample answered";
  EXPECT_EQ(source(), "personal") << "a newer global model does not displace it";
  coordinator->Signal(SIGTERM);
  EXPECT_EQ(coordinator->Wait(60s), 0) << coordinator->Stderr();
  for (auto* d : {d0.get(), d1.get()}) {
    d->Signal(SIGTERM);
    EXPECT_EQ(d->Wait(30s), 0) << d->Stderr();
  }
}

TEST_F(InferenceTest, ARestartedDaemonServesTheSavedModelBeforeAnyCoordinator) {
  const std::string socket = Path("inference.sock");
  {
    auto coordinator = Coordinator("coordinator", {"--rounds", "2", "--min-devices", "1"});
    auto d0 = Daemon(0, 1, {"--state-dir", Path("state")});
    ASSERT_EQ(coordinator->Wait(180s), 0) << coordinator->Stderr();
    ASSERT_EQ(d0->Wait(30s), 0) << d0->Stderr();
  }
  // No coordinator at all now: the saved model still answers.
  Process d0({FEDSGD_DAEMON_BIN, "--coordinator", "tcp://127.0.0.1:" + std::to_string(listen_),
              "--id", "dev0", "--data", kData, "--shard", "0/1", "--threads", "1", "--state-dir",
              Path("state"), "--inference-socket", socket},
             Path("restart.out"), Path("restart.log"));
  ASSERT_TRUE(WaitFor([&] { return Model(socket).is_object(); }, 60s)) << d0.Stderr();
  const nlohmann::json m = Model(socket);
  EXPECT_EQ(m["source"], "state-dir");
  EXPECT_EQ(m["model_version"], 2);
  const Answers a = Ask(socket);
  ASSERT_EQ(a.probabilities.size(), kSamples);
  EXPECT_GT(a.accuracy, 0.5);
  d0.Signal(SIGTERM);
  ASSERT_EQ(d0.Wait(30s), 0) << d0.Stderr();
}

}  // namespace
}  // namespace fedsgd
