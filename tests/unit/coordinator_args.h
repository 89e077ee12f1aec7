// Test helper: fedsgd-coordinator's command line parsed as the program
// parses it (CLI11 errors propagate as CLI::ParseError).
#pragma once

#include <string>
#include <vector>

#include "coordinator_options.h"

namespace fedsgd::testing {

inline CoordinatorOptions ParseCoordinatorArgs(std::vector<std::string> args) {
  CLI::App app;
  CoordinatorOptions o;
  AddCoordinatorOptions(app, o);
  args.insert(args.begin(), "fedsgd-coordinator");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return o;
}

}  // namespace fedsgd::testing
