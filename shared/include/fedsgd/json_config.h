// JsonConfig: lets CLI11 read a program's flags from a JSON file.
//
// A config file is one JSON object whose keys are flag names without the
// leading dashes, e.g. {"coordinator": "tcp://10.0.0.2:7070", "threads": 2}.
// Values are strings, numbers, booleans (for flags) or arrays. Flags given
// on the command line win over the file. Unknown keys are an error, as are
// nested objects and malformed JSON (the message names the file).
//
//   fedsgd::AddJsonConfig(app);   // adds --config FILE
#pragma once

#include <CLI/CLI.hpp>
#include <istream>
#include <string>
#include <vector>

namespace fedsgd {

class JsonConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
};

// Adds `--config FILE` to app, reading FILE with JsonConfig and refusing
// unknown keys.
CLI::Option* AddJsonConfig(CLI::App& app);

}  // namespace fedsgd
