// SavedModel (daemon/saved_model.h) and `fedsgd-daemon predict`
// (daemon/predict_command.h) on small models and data made here.
#include "saved_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "fedsgd/npy.h"
#include "predict_command.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

class SavedModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fedsgd_saved_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Dir() const { return dir_.string(); }
  fs::path dir_;
};

TEST_F(SavedModelTest, SavesAndLoadsTheNewestModelAndReplacesIt) {
  EXPECT_FALSE(LoadSavedModel(Dir()).has_value()) << "nothing saved yet";
  const Model m = Model::Create(Architecture::Parse("softmax:3-2"), 1);
  SaveModel(Dir(), {"softmax:3-2", 4, "run-a", m.params});
  std::optional<SavedModel> loaded = LoadSavedModel(Dir());
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->model, "softmax:3-2");
  EXPECT_EQ(loaded->model_version, 4u);
  EXPECT_EQ(loaded->run_id, "run-a");
  EXPECT_EQ(loaded->params, m.params);
  std::vector<float> newer(m.params.size(), 0.25f);
  SaveModel(Dir(), {"softmax:3-2", 5, "run-a", newer});
  EXPECT_EQ(LoadSavedModel(Dir())->params, newer);
  EXPECT_FALSE(fs::exists(dir_ / "model.npy.tmp"));
}

TEST_F(SavedModelTest, RefusesAMismatchedOrDamagedPair) {
  SaveModel(Dir(), {"softmax:3-2", 1, "r", std::vector<float>(8, 1.0f)});
  // A crash between the two renames of a save for another architecture.
  std::ofstream(dir_ / "model.npy", std::ios::binary) << EncodeNpy(std::vector<float>(5, 1.0f));
  EXPECT_THROW(LoadSavedModel(Dir()), Error);
  std::ofstream(dir_ / "model.npy", std::ios::binary) << EncodeNpy(std::vector<float>(8, 1.0f));
  std::ofstream(dir_ / "model.json") << "{not json";
  EXPECT_THROW(LoadSavedModel(Dir()), Error);
  fs::remove(dir_ / "model.json");
  EXPECT_THROW(LoadSavedModel(Dir()), Error) << "one file without the other";
}

TEST_F(SavedModelTest, PredictPrintsOneLinePerSampleFromTheSavedModel) {
  // softmax:2-2 with all-zero parameters: both classes equally likely.
  ASSERT_EQ(Architecture::Parse("softmax:2-2").ParameterCount(), 6u);
  const std::vector<float> params(6, 0.0f);
  SaveModel(Dir(), {"softmax:2-2", 7, "run-p", params});
  fs::create_directories(dir_);
  std::ofstream(dir_ / "data.csv") << "1,0,0\n0,1,1\n";  // two inputs and a label
  PredictCommandOptions o;
  o.data = (dir_ / "data.csv").string();
  o.state_dir = Dir();
  std::ostringstream out, log;
  RunPredictCommand(o, out, log);
  std::istringstream lines(out.str());
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["index"], count);
    EXPECT_NEAR(j["probabilities"][0].get<double>(), 0.5, 1e-6);
    EXPECT_NEAR(j["probabilities"][1].get<double>(), 0.5, 1e-6);
    ++count;
  }
  EXPECT_EQ(count, 2);
  EXPECT_NE(log.str().find("2 samples with model softmax:2-2 (run run-p, version 7)"),
            std::string::npos)
      << log.str();

  // Unlabelled rows (exactly the model's inputs), CSV output.
  std::ofstream(dir_ / "unlabelled.csv") << "1,0\n0,1\n3,3\n";
  o.data = (dir_ / "unlabelled.csv").string();
  o.format = "csv";
  std::ostringstream csv;
  RunPredictCommand(o, csv, log);
  const std::string text = csv.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  EXPECT_EQ(text.substr(0, 2), "0,");

  // A model that does not fit the data, and no model at all.
  std::ofstream(dir_ / "wide.csv") << "1,2,3,4,0\n";
  o.data = (dir_ / "wide.csv").string();
  EXPECT_THROW(RunPredictCommand(o, csv, log), Error);
  o.state_dir = (dir_ / "empty").string();
  EXPECT_THROW(RunPredictCommand(o, csv, log), Error);
}

// The personalised copy is its own pair beside the global model's, and
// predict --personal uses it.
TEST_F(SavedModelTest, ThePersonalisedCopyIsAPairOfItsOwn) {
  SaveModel(Dir(), {"softmax:2-2", 3, "run", std::vector<float>(6, 0.0f)});
  PredictCommandOptions o;
  std::ofstream(dir_ / "data.csv") << "5,0\n";
  o.data = (dir_ / "data.csv").string();
  o.state_dir = Dir();
  o.personal = true;
  std::ostringstream out, log;
  try {
    RunPredictCommand(o, out, log);
    ADD_FAILURE() << "no personalised model yet";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no personalised model"), std::string::npos);
  }
  // Class 0's weight on input 0: the personalised copy is sure of class 0.
  std::vector<float> personal(6, 0.0f);
  personal[0] = 4.0f;
  SaveModel(Dir(), {"softmax:2-2", 3, "run", personal}, "personal");
  EXPECT_TRUE(fs::exists(dir_ / "personal.npy") && fs::exists(dir_ / "personal.json"));
  EXPECT_EQ(LoadSavedModel(Dir())->params, std::vector<float>(6, 0.0f)) << "the global one stays";
  EXPECT_EQ(LoadSavedModel(Dir(), "personal")->params, personal);
  RunPredictCommand(o, out, log);
  const nlohmann::json j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["class"], 0);
  EXPECT_GT(j["probabilities"][0].get<double>(), 0.99);
  o.personal = false;
  std::ostringstream global;
  RunPredictCommand(o, global, log);
  EXPECT_NEAR(nlohmann::json::parse(global.str())["probabilities"][0].get<double>(), 0.5, 1e-6);
}

TEST_F(SavedModelTest, PredictAgreesWithTheModelsOwnEvaluation) {
  // Trained-looking random weights: predict's classes must match Score's count.
  const Architecture arch = Architecture::Parse("mlp:4-8-3");
  const Model m = Model::Create(arch, 9);
  fs::create_directories(dir_);
  std::ofstream csv(dir_ / "d.csv");
  Dataset d;
  d.num_features = 4;
  d.num_classes = 3;
  for (int i = 0; i < 50; ++i) {
    for (int f = 0; f < 4; ++f) {
      const float v = static_cast<float>((i * 7 + f * 3) % 11) / 5.0f - 1.0f;
      d.x.push_back(v);
      csv << v << ",";
    }
    d.y.push_back(static_cast<float>(i % 3));
    csv << i % 3 << "\n";
  }
  csv.close();
  std::ofstream(dir_ / "m.npy", std::ios::binary) << EncodeNpy(m.params);
  PredictCommandOptions o;
  o.data = (dir_ / "d.csv").string();
  o.model_file = (dir_ / "m.npy").string();
  o.model = "mlp:4-8-3";
  o.threads = 2;
  std::ostringstream out, log;
  RunPredictCommand(o, out, log);
  std::istringstream lines(out.str());
  std::string line;
  std::size_t correct = 0, i = 0;
  while (std::getline(lines, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    double sum = 0;
    for (const auto& p : j["probabilities"]) sum += p.get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-5);
    correct += j["class"].get<int>() == static_cast<int>(d.y[i++]);
  }
  EXPECT_EQ(i, 50u);
  const Evaluation ev = Evaluate(arch, m.params.data(), d);
  EXPECT_EQ(correct, static_cast<std::size_t>(ev.accuracy * 50 + 0.5));
  o.model.clear();
  EXPECT_THROW(RunPredictCommand(o, out, log), Error) << "--model-file needs --model";
}

}  // namespace
}  // namespace fedsgd
