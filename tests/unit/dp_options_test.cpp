// The --dp-* flags of the coordinator reach the plan, with their defaults,
// and bad values are refused naming the flag.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <string>
#include <utility>
#include <vector>

#include "coordinator_args.h"
#include "coordinator_options.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

Plan Parse(std::vector<std::string> args) {
  return testing::ParseCoordinatorArgs(std::move(args)).ToPlan();
}

TEST(DpOptionsTest, OffByDefault) {
  const Plan p = Parse({});
  EXPECT_FALSE(p.dp());
  EXPECT_EQ(p.dp_clip, 1.0);
  EXPECT_FALSE(p.dp_adaptive_clip);
  EXPECT_EQ(p.dp_target_quantile, 0.5);
  EXPECT_EQ(p.dp_clip_lr, 0.2);
  EXPECT_EQ(p.dp_delta, 1e-5);
}

TEST(DpOptionsTest, FlagsReachThePlan) {
  Plan p = Parse({"--dp-noise-multiplier", "1.1", "--dp-clip", "0.5", "--dp-delta", "1e-6"});
  EXPECT_EQ(p.dp_noise_multiplier, 1.1);
  EXPECT_EQ(p.dp_clip, 0.5);
  EXPECT_EQ(p.dp_delta, 1e-6);
  p = Parse({"--dp-noise-multiplier", "1", "--dp-clip", "adaptive", "--dp-target-quantile", "0.7",
             "--dp-clip-lr", "0.1"});
  EXPECT_TRUE(p.dp_adaptive_clip);
  EXPECT_EQ(p.dp_clip, kDefaultAdaptiveInitialClip);
  EXPECT_EQ(p.dp_target_quantile, 0.7);
  EXPECT_EQ(p.dp_clip_lr, 0.1);
  EXPECT_EQ(Parse({"--dp-noise-multiplier", "1", "--dp-clip", "adaptive:2"}).dp_clip, 2.0);
}

TEST(DpOptionsTest, BadValuesAreRefused) {
  EXPECT_THROW(Parse({"--dp-noise-multiplier", "-1"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--dp-noise-multiplier", "1", "--dp-clip", "0"}), Error);
  EXPECT_THROW(Parse({"--dp-noise-multiplier", "1", "--dp-delta", "1"}), Error);
  EXPECT_THROW(Parse({"--dp-target-quantile", "1.5"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--dp-clip-lr", "0"}), CLI::ValidationError);
}

TEST(DpOptionsTest, DpNeedsTheMean) {
  CoordinatorOptions o;
  o.db = ::testing::TempDir() + "dp_options_test.db";
  o.dp_noise_multiplier = 1;
  o.aggregator = "median";
  try {
    o.Check();
    ADD_FAILURE() << "DP accepted with another rule";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--aggregator mean"), std::string::npos) << e.what();
  }
  o.aggregator = "mean";
  EXPECT_NO_THROW(o.Check());
}

}  // namespace
}  // namespace fedsgd
