// The coordinator's flags: the limits (parsed, checked, passed to the
// rounds) and aggregation (parsed into the plan; a buffer that cannot hold
// --min-devices updates refused at startup).
#include "coordinator_options.h"

#include <gtest/gtest.h>

#include <utility>

#include "coordinator_args.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

CoordinatorOptions Parse(std::vector<std::string> args) {
  return testing::ParseCoordinatorArgs(std::move(args));
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

TEST(CoordinatorOptionsTest, AggregationFlagsBecomePlanFields) {
  const Plan plan = Parse({"--aggregator",
                           "multi_krum",
                           "--byzantine",
                           "2",
                           "--krum-select",
                           "4",
                           "--norm-bound",
                           "fixed:3",
                           "--max-device-weight",
                           "500",
                           "--server-optimizer",
                           "adam",
                           "--server-beta2",
                           "0.999",
                           "--server-tau",
                           "0.01",
                           "--trim-fraction",
                           "0.2",
                           "--aggregation-memory-mb",
                           "64"})
                        .ToPlan();
  EXPECT_EQ(plan.aggregator, "multi_krum");
  EXPECT_EQ(plan.byzantine, 2);
  EXPECT_EQ(plan.krum_select, 4);
  EXPECT_EQ(plan.norm_bound, "fixed:3");
  EXPECT_EQ(plan.max_device_weight, 500);
  EXPECT_EQ(plan.server_optimizer, "adam");
  EXPECT_EQ(plan.server_beta2, 0.999);
  EXPECT_EQ(plan.server_tau, 0.01);
  EXPECT_EQ(plan.trim_fraction, 0.2);
  EXPECT_EQ(plan.aggregation_memory_mb, 64);
  const Plan defaults = Parse({}).ToPlan();
  EXPECT_EQ(defaults.norm_bound, "adaptive:2");
  EXPECT_EQ(defaults.aggregator, "mean");
  EXPECT_THROW(Parse({"--aggregator", "bulyan"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--norm-bound", "fixed:-1"}).ToPlan(), Error);
}

TEST(CoordinatorOptionsTest, RefusesABufferThatCannotHoldMinDevicesUpdates) {
  // The MLP 784-128-10: 101,770 floats = 0.39 MiB an update.
  CoordinatorOptions o =
      Parse({"--aggregator", "median", "--min-devices", "10", "--aggregation-memory-mb", "3",
             "--norm-bound", "off", "--db", "/tmp/fedsgd-options-test-absent.db"});
  try {
    o.Check();
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--aggregation-memory-mb"), std::string::npos) << e.what();
  }
  o.aggregation_memory_mb = 5;  // 10 x 0.39 MiB = 3.9 MiB fits
  EXPECT_NO_THROW(o.Check());
  o.norm_bound = "adaptive:2";  // and the first round's buffer as much again does not
  EXPECT_THROW(o.Check(), Error);
}

TEST(CoordinatorOptionsTest, ClientsPerRoundTakesACountOrAFraction) {
  const Plan off = Parse({}).ToPlan();
  EXPECT_FALSE(off.selection());
  const Plan count = Parse({"--clients-per-round", "100", "--over-selection", "1.5"}).ToPlan();
  EXPECT_EQ(count.clients_per_round, 100);
  EXPECT_DOUBLE_EQ(count.over_selection, 1.5);
  EXPECT_DOUBLE_EQ(count.clients_fraction, 0);
  const Plan fraction = Parse({"--clients-per-round", "0.1"}).ToPlan();
  EXPECT_EQ(fraction.clients_per_round, 0);
  EXPECT_DOUBLE_EQ(fraction.clients_fraction, 0.1);
  EXPECT_DOUBLE_EQ(fraction.over_selection, 1.3) << "the default";
  EXPECT_DOUBLE_EQ(Parse({"--clients-per-round", "1.0"}).ToPlan().clients_fraction, 1.0);
  for (const char* bad : {"-3", "ten", "1.5", "0.0", "2e", ""}) {
    try {
      Parse({"--clients-per-round", bad}).ToPlan();
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--clients-per-round"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Parse({"--over-selection", "0.5"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--upload-slots", "0"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--max-heartbeat-rate", "0"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--clients-per-round", "10", "--async"}).ToPlan(), Error);
  const RoundSettings s =
      Parse({"--upload-slots", "8", "--max-heartbeat-rate", "50"}).ToRoundSettings();
  EXPECT_EQ(s.upload_slots, 8u);
  EXPECT_DOUBLE_EQ(s.max_heartbeat_rate, 50);
}

TEST(CoordinatorOptionsTest, WithSelectionTheBufferHoldsTheRoundsTarget) {
  // 10,000 devices, 100 updates a round: median buffers 100 updates (39 MiB), not 10,000.
  CoordinatorOptions o =
      Parse({"--aggregator", "median", "--min-devices", "10000", "--max-devices", "10000",
             "--clients-per-round", "100", "--aggregation-memory-mb", "60", "--norm-bound", "off",
             "--db", "/tmp/fedsgd-options-test-absent.db"});
  EXPECT_NO_THROW(o.Check());
  o.clients_per_round = "200";  // 78 MiB
  try {
    o.Check();
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--clients-per-round"), std::string::npos) << e.what();
  }
}

TEST(CoordinatorOptionsTest, UpdateCodecFlagBecomesThePlanField) {
  EXPECT_EQ(Parse({}).ToPlan().update_codec, "fp32");
  EXPECT_EQ(Parse({"--update-codec", "int8"}).ToPlan().update_codec, "int8");
  EXPECT_EQ(Parse({"--update-codec", "topk:0.01"}).ToPlan().ToJson().at("update_codec"),
            "topk:0.01");
  try {
    Parse({"--update-codec", "topk:0"}).ToPlan();
    ADD_FAILURE() << "accepted topk:0";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--update-codec"), std::string::npos) << e.what();
  }
}

TEST(CoordinatorOptionsTest, LogitAdjustmentFlagBecomesThePlanField) {
  EXPECT_EQ(Parse({}).ToPlan().logit_adjustment, 0.0);
  EXPECT_EQ(Parse({"--logit-adjustment", "1"}).ToPlan().logit_adjustment, 1.0);
  EXPECT_THROW(Parse({"--logit-adjustment", "-1"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--logit-adjustment", "11"}), CLI::ValidationError);
}

TEST(CoordinatorOptionsTest, LrRoundDecayFlagBecomesThePlanField) {
  EXPECT_EQ(Parse({}).ToPlan().lr_round_decay, 1.0);
  EXPECT_EQ(Parse({"--lr-round-decay", "0.95"}).ToPlan().lr_round_decay, 0.95);
  EXPECT_THROW(Parse({"--lr-round-decay", "0"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--lr-round-decay", "1.01"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--lr-round-decay", "-0.5"}), CLI::ValidationError);
}

TEST(CoordinatorOptionsTest, AsyncFlagsBecomePlanFields) {
  const Plan defaults = Parse({}).ToPlan();
  EXPECT_FALSE(defaults.async()) << "synchronous rounds stay the default";
  EXPECT_EQ(defaults.async_buffer, 0);
  EXPECT_EQ(defaults.max_staleness, 20);
  EXPECT_EQ(defaults.staleness_weight, "polynomial:0.5");
  const Plan p =
      Parse({"--async", "--buffer", "4", "--max-staleness", "9", "--staleness-weight", "hinge:1:2"})
          .ToPlan();
  EXPECT_TRUE(p.async());
  EXPECT_EQ(p.async_buffer, 4);
  EXPECT_EQ(p.max_staleness, 9);
  EXPECT_EQ(p.ToJson().at("staleness_weight"), "hinge:1:2");
  EXPECT_THROW(Parse({"--buffer", "-2"}), CLI::ValidationError);
  EXPECT_THROW(Parse({"--max-staleness", "x"}), CLI::ParseError);
  EXPECT_THROW(Parse({"--async", "--staleness-weight", "hinge:1"}).ToPlan(), Error);
  try {
    Parse({"--async", "--dp-noise-multiplier", "1"}).Check();
    ADD_FAILURE() << "accepted async with DP";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--async"), std::string::npos) << e.what();
  }
}

TEST(CoordinatorOptionsTest, ClassWeightingFlagBecomesThePlanField) {
  EXPECT_EQ(Parse({}).ToPlan().class_weighting, "none");
  EXPECT_EQ(Parse({"--class-weighting", "inverse_frequency"}).ToPlan().class_weighting,
            "inverse_frequency");
  EXPECT_THROW(Parse({"--class-weighting", "balanced"}), CLI::ValidationError);
}

TEST(CoordinatorOptionsTest, BroadcastCodecFlagBecomesThePlanField) {
  EXPECT_EQ(Parse({}).ToPlan().broadcast_codec, "fp32");
  EXPECT_EQ(Parse({"--broadcast-codec", "fp16"}).ToPlan().ToJson().at("broadcast_codec"), "fp16");
  for (const std::string bad : {"int8", "fp64"}) {
    try {
      Parse({"--broadcast-codec", bad}).ToPlan();
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--broadcast-codec"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("fp32 or fp16"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace fedsgd
