// Fuzz target: a --config file read through CLI11 and fedsgd::JsonConfig,
// the path both programs take (json_config.h).
//
// The input is written as the config file of an app carrying options of each
// kind the programs use: string, int, 64-bit unsigned, double, a checked
// int, a set member, a vector and flags. Parsing may end in CLI::ParseError
// (what the programs print as a usage error) and nothing else. A config
// that parses must survive the round trip the programs offer: written back
// with config_to_str and read again, it gives the same values (an abort
// otherwise).
#include <CLI/CLI.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "fedsgd/json_config.h"
#include "temp_file.h"

namespace {

struct Values {
  std::string endpoint;
  int threads = 1;
  std::uint64_t seed = 1;
  double lr = 0.05;
  int label_column = -1;
  std::string mode = "hogwild";
  std::vector<std::string> tags;
  std::vector<int> sizes;
  bool verbose = false;
  int quiet = 0;  // a counting flag

  auto Tie() const {
    return std::tie(endpoint, threads, seed, lr, label_column, mode, tags, sizes, verbose, quiet);
  }
};

void AddOptions(CLI::App& app, Values& v) {
  fedsgd::AddJsonConfig(app);
  app.add_option("--endpoint", v.endpoint, "string");
  app.add_option("--threads", v.threads, "int")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", v.seed, "uint64");
  app.add_option("--lr", v.lr, "double")->check(CLI::PositiveNumber);
  app.add_option("--label-column", v.label_column, "int, may be negative");
  app.add_option("--mode", v.mode, "set member")->check(CLI::IsMember({"hogwild", "sync"}));
  app.add_option("--tag", v.tags, "vector of strings");
  app.add_option("--size", v.sizes, "vector of ints");
  app.add_flag("--verbose", v.verbose, "flag");
  app.add_flag("--quiet", v.quiet, "counting flag");
}

// Parses `--config path` into v; false for a usage error.
bool Parse(const std::string& path, Values& v, std::string* written = nullptr) {
  CLI::App app{"json_config_fuzz"};
  AddOptions(app, v);
  const char* argv[] = {"json_config_fuzz", "--config", path.c_str()};
  try {
    app.parse(3, argv);
  } catch (const CLI::ParseError&) {
    return false;
  }
  if (written) *written = app.config_to_str(/*default_also=*/false, /*write_description=*/false);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fedsgd::fuzz::TempFile config("config.json");
  static const fedsgd::fuzz::TempFile rewritten("rewritten.json");
  config.Write(std::string_view(reinterpret_cast<const char*>(data), size));
  Values first;
  std::string written;
  if (!Parse(config.path(), first, &written)) return 0;
  rewritten.Write(written);
  Values second;
  if (!Parse(rewritten.path(), second) || first.Tie() != second.Tie()) {
    std::fprintf(stderr,
                 "json_config_fuzz: a config written by config_to_str reads differently:\n%s",
                 written.c_str());
    std::abort();
  }
  return 0;
}
