// LoadInitialModel (coordinator/initial_model.h): a pretrained start from a
// .npy file or from a round of another run's database, refused with a
// message naming the problem when it does not fit the model; and the plan
// that carries it (a different file is a different plan).
#include "initial_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "checkpoint_store.h"
#include "coordinator_options.h"
#include "fedsgd/error.h"
#include "fedsgd/npy.h"
#include "fedsgd/plan.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

const Architecture kArch = Architecture::Parse("mlp:4-3-2");  // 15 + 8 = 23 parameters

class InitialModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fedsgd_initial_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Write(const std::string& name, const std::string& bytes) const {
    std::ofstream(Path(name), std::ios::binary) << bytes;
    return Path(name);
  }
  static std::vector<float> Values(float base, std::size_t n = 23) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = base + 0.001f * static_cast<float>(i);
    return v;
  }
  // A database with one run of `model` whose rounds 0..3 hold Values(round).
  std::string Database(const std::string& name, const std::string& model) const {
    Plan plan;
    plan.model = model;
    const std::size_t n = plan.architecture().ParameterCount();
    auto store = CheckpointStore::Open(Path(name));
    const RunState run = store->StartRun(plan.ToJson(), Values(0, n), /*new_run=*/true);
    for (std::uint64_t r = 1; r <= 3; ++r) {
      RoundRecord rec;
      rec.run_id = run.run_id;
      rec.round = r;
      store->CommitRound(rec, Values(static_cast<float>(r), n), {});
    }
    return Path(name);
  }
  static std::string Message(const std::string& source) {
    try {
      LoadInitialModel(source, kArch);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(InitialModelTest, ReadsANpyFile) {
  const std::string file = Write("pre.npy", EncodeNpy(Values(0.5f)));
  const InitialModel m = LoadInitialModel(file, kArch);
  EXPECT_EQ(m.params, Values(0.5f));
  EXPECT_EQ(m.source, file);
  EXPECT_EQ(m.sha256, Sha256Hex(Values(0.5f)));
  EXPECT_EQ(m.sha256.size(), 64u);
  EXPECT_NE(m.sha256, Sha256Hex(Values(0.25f)));
}

TEST_F(InitialModelTest, Sha256IsOfTheFloatBytes) {
  // sha256 of the 4 bytes 00 00 80 3f (1.0f, little-endian).
  EXPECT_EQ(Sha256Hex(std::vector<float>{1.0f}),
            "e00e5eb9444182f352323374ef4e08ebcb784725fdd4fd612d7730540b3e0c8c");
}

TEST_F(InitialModelTest, ReadsARoundOfAnotherRunsDatabase) {
  const std::string db = Database("other.db", "mlp:4-3-2");
  EXPECT_EQ(LoadInitialModel(db, kArch).params, Values(3)) << "its newest round by default";
  EXPECT_EQ(LoadInitialModel(db + ":2", kArch).params, Values(2));
  EXPECT_EQ(LoadInitialModel(db + ":0", kArch).params, Values(0)) << "its initial model";
  EXPECT_EQ(LoadInitialModel(db + ":1:1", kArch).params, Values(1)) << "run 1, round 1";
  // The dropout of the run that trained them does not matter.
  const std::string dropout = Database("dropout.db", "mlp:4-3-2:relu:dropout=0.5");
  EXPECT_EQ(LoadInitialModel(dropout, kArch).params, Values(3));
}

TEST_F(InitialModelTest, RefusesWhatDoesNotFit) {
  const std::string db = Database("other.db", "mlp:4-3-2");
  EXPECT_NE(Message(db + ":9").find("has no round 9 (its newest is 3)"), std::string::npos)
      << Message(db + ":9");
  EXPECT_NE(Message(db + ":7:1").find("has no run 7"), std::string::npos) << Message(db + ":7:1");
  const std::string wider = Database("wider.db", "mlp:4-5-2");
  EXPECT_NE(Message(wider).find("trains model mlp:4-5-2, not this plan's mlp:4-3-2"),
            std::string::npos)
      << Message(wider);
  const std::string tanh = Database("tanh.db", "mlp:4-3-2:tanh");
  EXPECT_NE(Message(tanh).find("trains model"), std::string::npos) << "same layout, other model";

  const std::string small = Write("small.npy", EncodeNpy(Values(0, 22)));
  EXPECT_NE(Message(small).find("22 parameters, but model mlp:4-3-2 has 23"), std::string::npos)
      << Message(small);
  std::vector<float> nan = Values(0);
  nan[7] = std::nanf("");
  EXPECT_NE(Message(Write("nan.npy", EncodeNpy(nan))).find("parameter 7 is not finite"),
            std::string::npos);
  std::vector<float> inf = Values(0);
  inf[22] = -INFINITY;
  EXPECT_NE(Message(Write("inf.npy", EncodeNpy(inf))).find("parameter 22 is not finite"),
            std::string::npos);
  EXPECT_NE(Message(Path("missing.npy")).find("no such file"), std::string::npos);
  EXPECT_NE(Message(Write("text.txt", "hello")).find("neither a .npy file nor an SQLite"),
            std::string::npos);
  std::string truncated = EncodeNpy(Values(0));
  truncated.resize(truncated.size() - 5);
  EXPECT_NE(Message(Write("cut.npy", truncated)), "") << "a truncated .npy file";
  EXPECT_NE(Message(Write("pre.npy", EncodeNpy(Values(0))) + ":3").find("has no rounds"),
            std::string::npos);
  EXPECT_NE(Message(dir_.string()).find("no such file"), std::string::npos) << "a directory";
  EXPECT_NE(Message(""), "");
}

TEST_F(InitialModelTest, AFileWithAColonInItsNameIsTakenWhole) {
  const std::string file = Write("pre:3", EncodeNpy(Values(0.5f)));
  EXPECT_EQ(LoadInitialModel(file, kArch).params, Values(0.5f));
}

TEST_F(InitialModelTest, ThePlanCarriesTheSourceAndItsDigest) {
  CoordinatorOptions o;
  o.model = "mlp:4-3-2";
  o.min_devices = 1;
  EXPECT_FALSE(o.ToPlan().ToJson().contains("initial_model")) << "absent unless asked for";
  o.initial_model = Write("a.npy", EncodeNpy(Values(0.5f)));
  const Plan a = o.ToPlan();
  EXPECT_EQ(a.initial_model, o.initial_model);
  EXPECT_EQ(a.initial_model_sha256, Sha256Hex(Values(0.5f)));
  EXPECT_EQ(Plan::FromJson(a.ToJson()).ToJson(), a.ToJson()) << "round-trips";
  // The same name with other weights is another plan.
  Write("a.npy", EncodeNpy(Values(0.25f)));
  EXPECT_NE(o.ToPlan().ToJson(), a.ToJson());
  o.initial_model = Path("a.db");
  EXPECT_THROW(o.Check(), Error) << "--check-config loads and checks it";
  o.model = "mlp:4-4-2";
  o.initial_model = Write("b.npy", EncodeNpy(Values(0.5f)));
  EXPECT_THROW(o.ToPlan(), Error) << "checked against --model";

  Plan bad = a;
  bad.initial_model_sha256 = "xyz";
  EXPECT_THROW(bad.Validate(), Error);
  bad.initial_model_sha256.clear();
  EXPECT_THROW(bad.Validate(), Error) << "the source needs its digest";
}

}  // namespace
}  // namespace fedsgd
