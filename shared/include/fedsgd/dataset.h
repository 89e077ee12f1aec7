// Data sets in memory, and the loaders that read them from disk.
//
// A Dataset is a dense float matrix of n samples (each sample's features
// contiguous, i.e. column-major features x n) and one float target per
// sample: the class index (0..num_classes-1) for classification, the value
// for regression. Features are already scaled as loaded (IDX pixels / 255).
//
// Loaders throw fedsgd::Error for anything malformed, naming the file and,
// for text, the line and column. They never skip input silently.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace fedsgd {

struct Dataset {
  int num_features = 0;
  int num_classes = 0;   // 0 for regression
  std::vector<float> x;  // size() * num_features, sample-major
  std::vector<float> y;  // one target per sample

  std::size_t size() const { return y.size(); }
  const float* sample(std::size_t i) const { return x.data() + i * num_features; }
  // A new data set holding the given samples, in that order.
  Dataset Subset(const std::vector<std::size_t>& indices) const;
};

// IDX (the MNIST format): an images file (ubyte, 3 dims) and a labels file
// (ubyte, 1 dim), each plain or .gz. Pixels are scaled to [0, 1].
Dataset LoadIdx(const std::string& images_path, const std::string& labels_path);

struct CsvOptions {
  int label_column = -1;       // 0-based; -1 means the last column
  bool header = false;         // skip the first line
  bool classification = true;  // labels must be integers >= 0
  char delimiter = ',';
};
// Numeric CSV, plain or .gz. Every row must have the same number of columns.
Dataset LoadCsv(const std::string& path, const CsvOptions& options = {});

// Which part of a directory data set to read.
enum class Split { kTrain, kTest };

// Loads what a user names on the command line: a directory holding the four
// standard IDX files (train-* for kTrain, t10k-* for kTest, .gz or not), an
// IDX images file (the labels file beside it is found by name), or a CSV file.
// A path that is not a directory and has no "images-idx3" in its name is
// read as CSV; `split` matters only for a directory.
Dataset LoadDataset(const std::string& path, Split split, const CsvOptions& csv = {});

// Standardisation: per-feature mean and standard deviation, computed on a
// training set and kept with the model, so the same transform applies to
// evaluation data and on other devices.
struct Standardizer {
  std::vector<float> mean;
  std::vector<float> stddev;  // features with zero variance get 1

  static Standardizer Fit(const Dataset& data);
  void Apply(Dataset& data) const;  // throws Error if feature counts differ
};

}  // namespace fedsgd
