// `fedsgd-daemon predict`: inference with the newest model on the board.
//
// Classifies (or, for regression models, predicts) every sample of a data
// set with the model the daemon saved in its state directory
// (daemon/saved_model.h), or with a .npy file and --model given, and prints
// one line per sample on stdout: JSON ({"index", "class", "probabilities"}
// or {"index", "prediction"}) or CSV (index, class, one probability per
// class). A summary line (samples, seconds, samples per second) goes to
// stderr. The data is an IDX directory (its t10k-* files) or images file,
// a CSV file, or "-" for CSV on stdin. Labels in the data are ignored; a
// CSV whose rows hold exactly the model's inputs (no label column) is read
// as unlabelled.
#pragma once

#include <CLI/CLI.hpp>
#include <iosfwd>
#include <string>

namespace fedsgd {

struct PredictCommandOptions {
  std::string data;
  std::string state_dir;   // the daemon's --state-dir
  bool personal = false;   // the personalised copy (personal.npy) instead
  std::string model_file;  // a .npy file instead of the saved model
  std::string model;       // its architecture (with --model-file)
  std::string format = "json";
  int threads = 1;
  int label_column = -1;
  bool csv_header = false;
};

CLI::App* AddPredictCommand(CLI::App& app, PredictCommandOptions& options);

// Throws fedsgd::Error for bad input (no saved model, a model that does not
// fit the data, unreadable files).
void RunPredictCommand(const PredictCommandOptions& options, std::ostream& out, std::ostream& log);

}  // namespace fedsgd
