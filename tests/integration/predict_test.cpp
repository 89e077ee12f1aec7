// Inference on the board: a daemon of a real federation keeps the newest
// global model in its --state-dir, and `fedsgd-daemon predict` classifies
// the Fashion-MNIST test set with it exactly as well as the coordinator's
// own evaluation of the final model says, after the coordinator is gone.
#include <gtest/gtest.h>

#include <sstream>

#include "fedsgd/dataset.h"
#include "fleet_fixture.h"

namespace fedsgd {
namespace {

using namespace std::chrono_literals;

class PredictTest : public FleetFixture {};

TEST_F(PredictTest, TheDaemonKeepsTheFinalModelAndPredictsWithIt) {
  auto coordinator = Coordinator("coordinator", {"--rounds", "3", "--min-devices", "2"});
  const std::string state = Path("state");
  auto d0 = Daemon(0, 2, {"--state-dir", state}), d1 = Daemon(1, 2);
  ASSERT_EQ(coordinator->Wait(90s), 0) << coordinator->Stderr();
  ASSERT_EQ(d0->Wait(10s), 0) << d0->Stderr();
  const nlohmann::json summary = nlohmann::json::parse(coordinator->Stdout());
  const double accuracy = summary["test_accuracy"].get<double>();

  const std::string meta_text = [&] {
    std::ifstream in(Path("state/model.json"));
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }();
  const nlohmann::json meta = nlohmann::json::parse(meta_text, nullptr, false);
  ASSERT_TRUE(meta.is_object()) << meta_text;
  EXPECT_EQ(meta["model_version"], 3) << "the final model";
  EXPECT_EQ(meta["model"], kModel);

  Process predict(
      {FEDSGD_DAEMON_BIN, "predict", "--data", kData, "--state-dir", state, "--threads", "2"},
      Path("predict.out"), Path("predict.log"));
  ASSERT_EQ(predict.Wait(60s), 0) << predict.Stderr();
  EXPECT_NE(predict.Stderr().find("10000 samples with model " + std::string(kModel) +
                                  " (run 1, version 3)"),
            std::string::npos)
      << predict.Stderr();
  const Dataset test = LoadDataset(kData, Split::kTest);
  std::istringstream lines(predict.Stdout());
  std::string line;
  std::size_t i = 0, correct = 0;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_EQ(j["index"], i);
    ASSERT_EQ(j["probabilities"].size(), 10u);
    correct += j["class"].get<int>() == static_cast<int>(test.y.at(i));
    ++i;
  }
  ASSERT_EQ(i, test.size());
  EXPECT_NEAR(static_cast<double>(correct) / static_cast<double>(i), accuracy, 1e-4)
      << "predict uses the final model, as the coordinator evaluated it";
}

}  // namespace
}  // namespace fedsgd
