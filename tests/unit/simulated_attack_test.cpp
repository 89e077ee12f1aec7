// Simulated attackers: parsing, and what each attack does to an update or to
// the training labels.
#include "simulated_attack.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

std::vector<float> Delta() { return {0.5f, -1.0f, 0.0f, 2.0f}; }

TEST(SimulatedAttackTest, ParsesAndPrintsEveryKind) {
  for (const char* text : {"none", "sign-flip", "scale:10", "scale:-2.5", "gaussian:1",
                           "gaussian:0.25", "label-flip"}) {
    EXPECT_EQ(SimulatedAttack::Parse(text).ToString(), text);
  }
  EXPECT_FALSE(SimulatedAttack::Parse("none").active());
  EXPECT_TRUE(SimulatedAttack::Parse("sign-flip").active());
  EXPECT_EQ(SimulatedAttack::Parse("scale:10").value, 10.0);
}

TEST(SimulatedAttackTest, RefusesBadTextNamingTheFlag) {
  for (const char* text : {"", "flip", "scale", "scale:", "scale:x", "scale:1e7", "scale:nan",
                           "gaussian:0", "gaussian:-1", "gaussian:inf", "label-flip:2"}) {
    try {
      SimulatedAttack::Parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--simulate-attack"), std::string::npos) << e.what();
    }
  }
}

TEST(SimulatedAttackTest, NoneAndLabelFlipLeaveTheUpdateAlone) {
  std::mt19937_64 rng(1);
  for (const char* text : {"none", "label-flip"}) {
    std::vector<float> u = Delta();
    SimulatedAttack::Parse(text).Apply(u, rng);
    EXPECT_EQ(u, Delta()) << text;
  }
}

TEST(SimulatedAttackTest, SignFlipNegates) {
  std::mt19937_64 rng(1);
  std::vector<float> u = Delta();
  SimulatedAttack::Parse("sign-flip").Apply(u, rng);
  EXPECT_EQ(u, (std::vector<float>{-0.5f, 1.0f, -0.0f, -2.0f}));
}

TEST(SimulatedAttackTest, ScaleMultipliesByK) {
  std::mt19937_64 rng(1);
  std::vector<float> u = Delta();
  SimulatedAttack::Parse("scale:10").Apply(u, rng);
  EXPECT_EQ(u, (std::vector<float>{5.0f, -10.0f, 0.0f, 20.0f}));
}

TEST(SimulatedAttackTest, GaussianReplacesTheUpdateWithNoiseOfSigma) {
  std::mt19937_64 rng(3);
  std::vector<float> u(20000, 7.0f);
  SimulatedAttack::Parse("gaussian:2").Apply(u, rng);
  ASSERT_EQ(u.size(), 20000u);
  double sum = 0, squares = 0;
  for (const float v : u) {
    sum += v;
    squares += static_cast<double>(v) * v;
  }
  const double mean = sum / 20000, sd = std::sqrt(squares / 20000 - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.1) << "the honest update (7) must not show through";
  EXPECT_NEAR(sd, 2.0, 0.1);
}

TEST(SimulatedAttackTest, LabelFlipMapsYToClassesMinusOneMinusY) {
  Dataset d;
  d.num_features = 1;
  d.num_classes = 10;
  d.x = {0, 0, 0, 0};
  d.y = {0, 3, 9, 5};
  SimulatedAttack::Parse("label-flip").FlipLabels(d, 10);
  EXPECT_EQ(d.y, (std::vector<float>{9, 6, 0, 4}));
  Dataset honest = d;
  SimulatedAttack::Parse("sign-flip").FlipLabels(honest, 10);
  EXPECT_EQ(honest.y, d.y) << "only label-flip touches the labels";
  Dataset regression = d;
  regression.num_classes = 0;
  EXPECT_THROW(SimulatedAttack::Parse("label-flip").FlipLabels(regression, 10), Error);
}

}  // namespace
}  // namespace fedsgd
