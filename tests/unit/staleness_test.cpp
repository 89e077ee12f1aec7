// StalenessWeight (fedsgd/staleness.h) and Pacer (fedsgd/pacer.h).
#include "fedsgd/staleness.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>

#include "fedsgd/error.h"
#include "fedsgd/pacer.h"

namespace fedsgd {
namespace {

TEST(StalenessWeightTest, ParsesEachKindAndComputesItsWeight) {
  const StalenessWeight poly = StalenessWeight::Parse("polynomial:0.5");
  EXPECT_DOUBLE_EQ(poly(0), 1.0);
  EXPECT_DOUBLE_EQ(poly(3), 0.5);
  EXPECT_EQ(poly.ToString(), "polynomial:0.5");
  const StalenessWeight hinge = StalenessWeight::Parse("hinge:10:4");
  EXPECT_DOUBLE_EQ(hinge(4), 1.0);
  EXPECT_DOUBLE_EQ(hinge(5), 1.0 / 11);
  EXPECT_EQ(hinge.ToString(), "hinge:10:4");
  const StalenessWeight constant = StalenessWeight::Parse("constant");
  EXPECT_DOUBLE_EQ(constant(1000), 1.0);
  EXPECT_EQ(StalenessWeight::Parse(constant.ToString()).kind, StalenessWeight::Kind::kConstant);
  // Never increasing with staleness.
  for (const char* text : {"polynomial:0.5", "polynomial:2", "hinge:1:0", "hinge:0.5:3"}) {
    const StalenessWeight w = StalenessWeight::Parse(text);
    for (std::uint64_t s = 0; s < 50; ++s) EXPECT_LE(w(s + 1), w(s)) << text << " at " << s;
  }
}

TEST(StalenessWeightTest, RefusesBadTextNamingTheFlag) {
  for (const char* text :
       {"", "poly", "polynomial:", "polynomial:-1", "polynomial:nan", "polynomial:1x", "hinge:1",
        "hinge:1:-2", "hinge::", "constant:1", "exp:1"}) {
    try {
      StalenessWeight::Parse(text);
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--staleness-weight"), std::string::npos) << e.what();
    }
  }
}

TEST(PacerTest, OffAtOneAndCutShortByTheStopFlag) {
  EXPECT_FALSE(Pacer().active());
  EXPECT_FALSE(Pacer(1).active());
  std::atomic<bool> stop{true};
  const Pacer pacer(1e6, &stop);
  EXPECT_TRUE(pacer.active());
  pacer.After(1.0);     // would sleep for 11.6 days without the stop flag
  Pacer(1).After(1e9);  // off: returns at once
  SUCCEED();
}

TEST(PacerTest, SleepsSlowdownMinusOneTimesTheWork) {
  // A lower bound only: a sleep is never shorter than asked, so this cannot
  // flake on a loaded machine (an upper bound could).
  const auto start = std::chrono::steady_clock::now();
  Pacer(3).After(0.05);
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.1);
}

}  // namespace
}  // namespace fedsgd
