// The issue 9 device-side options as flags: --prox-mu and --eval-fraction
// reach the plan, bad values are refused, and the daemon's
// --simulate-attack is checked before it starts.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "coordinator_options.h"
#include "daemon_options.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

bool ParseCoordinator(std::vector<std::string> args, CoordinatorOptions& o) {
  CLI::App app;
  AddCoordinatorOptions(app, o);
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
    return true;
  } catch (const CLI::ParseError&) {
    return false;
  }
}

// Options that pass Check, for tests that then change one field.
DaemonOptions UsableDaemonOptions() {
  DaemonOptions d;
  d.coordinator = "tcp://127.0.0.1:7070";
  d.data = ".";
  d.id = "dev0";
  return d;
}

TEST(DeviceOptionsTest, ProxMuAndEvalFractionReachThePlan) {
  CoordinatorOptions o;
  ASSERT_TRUE(ParseCoordinator({"--prox-mu", "0.01", "--eval-fraction", "0.2"}, o));
  const Plan p = o.ToPlan();
  EXPECT_DOUBLE_EQ(p.prox_mu, 0.01);
  EXPECT_DOUBLE_EQ(p.eval_fraction, 0.2);
  CoordinatorOptions defaults;
  ASSERT_TRUE(ParseCoordinator({}, defaults));
  EXPECT_EQ(defaults.ToPlan().prox_mu, 0.0);
  EXPECT_EQ(defaults.ToPlan().eval_fraction, 0.1);
}

TEST(DeviceOptionsTest, BadValuesAreRefused) {
  CoordinatorOptions o;
  EXPECT_FALSE(ParseCoordinator({"--prox-mu", "-1"}, o));
  EXPECT_FALSE(ParseCoordinator({"--eval-fraction", "0.7"}, o));
  EXPECT_FALSE(ParseCoordinator({"--eval-fraction", "-0.1"}, o));
}

TEST(DeviceOptionsTest, DaemonChecksSimulateAttack) {
  DaemonOptions d = UsableDaemonOptions();
  d.simulate_attack = "gaussian:1";
  EXPECT_NO_THROW(d.Check());
  d.simulate_attack = "gaussian";
  EXPECT_THROW(d.Check(), Error);
}

TEST(DeviceOptionsTest, DaemonChecksSlowdown) {
  DaemonOptions d = UsableDaemonOptions();
  EXPECT_EQ(d.slowdown, 1.0) << "full speed unless asked";
  d.slowdown = 10;
  EXPECT_NO_THROW(d.Check());
  for (double bad : {0.5, 0.0, -1.0, 1001.0, std::nan("")}) {
    d.slowdown = bad;
    try {
      d.Check();
      ADD_FAILURE() << "accepted --slowdown " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--slowdown"), std::string::npos) << e.what();
    }
  }
}

TEST(DeviceOptionsTest, DaemonChecksIdleDisconnect) {
  {
    DaemonOptions parsed;
    CLI::App app;
    AddDaemonOptions(app, parsed);
    app.parse(std::vector<std::string>{"2.5", "--idle-disconnect"});  // CLI11: last first
    EXPECT_EQ(parsed.idle_disconnect, 2.5) << "the flag reaches the option";
  }
  DaemonOptions d = UsableDaemonOptions();
  EXPECT_EQ(d.idle_disconnect, 0.0) << "stays connected unless asked";
  for (double good : {0.0, 1.0, 5.0, 3600.0}) {
    d.idle_disconnect = good;
    EXPECT_NO_THROW(d.Check()) << good;
  }
  for (double bad : {0.5, -1.0, 3601.0, std::nan(""), HUGE_VAL}) {
    d.idle_disconnect = bad;
    try {
      d.Check();
      ADD_FAILURE() << "accepted --idle-disconnect " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--idle-disconnect"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace fedsgd
