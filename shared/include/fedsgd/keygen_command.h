// The `keygen` subcommand of both programs: writes a CURVE key pair
// (fedsgd/curve_keys.h) and says what to do with each half.
//
// `--out DIR` writes DIR/<name>.key and DIR/<name>.key_secret, `--out
// PREFIX` writes PREFIX.key and PREFIX.key_secret; existing files are never
// overwritten. Called from main() only. Throws fedsgd::Error (the message
// names the file) when a file exists or cannot be written.
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <string>

namespace fedsgd {

struct KeygenOptions {
  std::string out;  // empty: the default name in the working directory
};

// Registers `keygen` on app; `default_name` is the file name used when --out
// is a directory or not given ("coordinator", "device").
CLI::App* AddKeygenCommand(CLI::App& app, KeygenOptions& options, const std::string& default_name);

// Writes the pair; prints the file names, the public key and the next step
// (`next_step`, a sentence) on out.
void RunKeygen(const KeygenOptions& options, const std::string& default_name,
               const std::string& next_step, std::ostream& out);

}  // namespace fedsgd
