// The coordinator's limit flags: parsed, checked, passed to the rounds.
#include "coordinator_options.h"

#include <gtest/gtest.h>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

CoordinatorOptions Parse(std::vector<std::string> args) {
  CLI::App app;
  CoordinatorOptions options;
  AddCoordinatorOptions(app, options);
  args.insert(args.begin(), "fedsgd-coordinator");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return options;
}

TEST(CoordinatorOptionsTest, LimitFlagsHaveSafeDefaultsAndReachTheRounds) {
  const CoordinatorOptions defaults = Parse({});
  EXPECT_EQ(defaults.max_devices, 10000u);
  EXPECT_EQ(defaults.max_joins_per_second, 50);
  EXPECT_EQ(defaults.max_samples_per_device, 10'000'000u);
  EXPECT_EQ(defaults.forget_offline_after, 600);
  const CoordinatorOptions o =
      Parse({"--max-devices", "5", "--max-joins-per-second", "2.5", "--max-samples-per-device",
             "100", "--forget-offline-after", "30"});
  EXPECT_EQ(o.max_devices, 5u);
  EXPECT_EQ(o.max_joins_per_second, 2.5);
  EXPECT_EQ(o.max_samples_per_device, 100u);
  const RoundSettings s = o.ToRoundSettings();
  EXPECT_EQ(s.max_devices, 5u);
  EXPECT_EQ(s.forget_offline_after, 30);
}

TEST(CoordinatorOptionsTest, LimitFlagsRefuseNonsense) {
  EXPECT_THROW(Parse({"--max-devices", "0"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--max-joins-per-second", "-1"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--max-samples-per-device", "0"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--forget-offline-after", "0"}), CLI::ValidationError);
  CoordinatorOptions o = Parse({"--max-devices", "2", "--min-devices", "3"});
  o.db = ::testing::TempDir() + "/no-such.db";
  try {
    o.Check();
    ADD_FAILURE() << "accepted --min-devices above --max-devices";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--max-devices"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fedsgd
