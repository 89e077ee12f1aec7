// Data sets in memory, and the loaders that read them from disk.
//
// A Dataset is a dense matrix of n samples (each sample's features
// contiguous, i.e. column-major features x n) and one float target per
// sample: the class index (0..num_classes-1) for classification, the value
// for regression. Features are held either as floats (`x`: CSV data,
// standardised data) or as bytes (`bytes`, each meaning byte * byte_scale:
// IDX images as they are on disk, a quarter of the memory). Code that needs
// floats asks for them a mini-batch at a time (Gather, CopyFeatures), which
// converts bytes on the way; sample() is for float data only.
//
// A Dataset is a plain value: const access from many threads is safe.
//
// Loaders throw fedsgd::Error for anything malformed, naming the file and,
// for text, the line and column. They never skip input silently.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace fedsgd {

struct Dataset {
  int num_features = 0;
  int num_classes = 0;  // 0 for regression
  // The features, size() * num_features, sample-major, in one of the two
  // vectors (the other is empty): floats, or bytes scaled by byte_scale.
  std::vector<float> x;
  std::vector<std::uint8_t> bytes;
  float byte_scale = 1.0f / 255.0f;
  std::vector<float> y;  // one target per sample

  std::size_t size() const { return y.size(); }
  bool byte_features() const { return !bytes.empty(); }
  // Sample i's features in place; float data only.
  const float* sample(std::size_t i) const {
    assert(!byte_features());
    return x.data() + i * num_features;
  }
  // Sample i's num_features features as floats into out.
  void CopyFeatures(std::size_t i, float* out) const;
  // The mini-batch gather: samples rows[0..k) into x (k * num_features
  // floats, sample-major) and their targets into y (k floats). Converts
  // byte features; allocates nothing. Rows must be below size().
  void Gather(std::span<const std::size_t> rows, float* x, float* y) const;
  // A new data set holding the given samples, in that order, in the same
  // representation.
  Dataset Subset(const std::vector<std::size_t>& indices) const;
  // Replaces byte features by their float values (no-op for float data).
  void ConvertToFloat();
};

// Which samples of a file to keep, decided from the targets alone: called
// with a Dataset that holds every target (y, num_classes) but no features,
// it returns strictly ascending sample indices. A loader given one keeps
// only those samples' features in memory.
using RowPicker = std::function<std::vector<std::size_t>(const Dataset& targets)>;

// IDX (the MNIST format): an images file (ubyte, 3 dims) and a labels file
// (ubyte, 1 dim), each plain or .gz. Pixels stay bytes, byte_scale 1/255
// (values in [0, 1]). With `pick`, the labels are read first and the
// images file is streamed, keeping only the picked images.
Dataset LoadIdx(const std::string& images_path, const std::string& labels_path,
                const RowPicker& pick = {});

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
// read as CSV; `split` matters only for a directory. `pick` (optional) keeps
// only some samples: IDX data then never holds the others in memory; CSV
// is read whole and cut.
Dataset LoadDataset(const std::string& path, Split split, const CsvOptions& csv = {},
                    const RowPicker& pick = {});

// Standardisation: per-feature mean and standard deviation, computed on a
// training set and kept with the model, so the same transform applies to
// evaluation data and on other devices.
struct Standardizer {
  std::vector<float> mean;
  std::vector<float> stddev;  // features with zero variance get 1

  static Standardizer Fit(const Dataset& data);
  // Standardises data in place, converting byte features to floats first.
  // Throws Error if feature counts differ.
  void Apply(Dataset& data) const;
};

}  // namespace fedsgd
