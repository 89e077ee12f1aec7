// Dataset::Subset, LoadDataset (which loader a path asks for) and the
// Standardizer (see dataset.h). The loaders themselves are in idx_loader.cpp
// and csv_loader.cpp.
#include "fedsgd/dataset.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

bool Exists(const fs::path& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// `name` or `name.gz` in dir, whichever exists (the plain one first: it
// loads faster).
std::string FindIdx(const fs::path& dir, const std::string& name) {
  for (const std::string& candidate : {name, name + ".gz"}) {
    if (Exists(dir / candidate)) return (dir / candidate).string();
  }
  throw Error(dir.string() + ": neither " + name + " nor " + name +
              ".gz is in this directory (expected the standard MNIST file names)");
}

// The labels file beside an images file: "images-idx3" becomes
// "labels-idx1" in the name, compressed or not.
std::string LabelsBeside(const std::string& images_path, std::size_t at) {
  const fs::path images(images_path);
  std::string name = images.filename().string();
  name.replace(at, 11, "labels-idx1");
  const fs::path dir = images.parent_path();
  std::vector<std::string> candidates = {name};
  if (name.ends_with(".gz")) {
    candidates.push_back(name.substr(0, name.size() - 3));
  } else {
    candidates.push_back(name + ".gz");
  }
  for (const std::string& candidate : candidates) {
    if (Exists(dir / candidate)) return (dir / candidate).string();
  }
  throw Error(images_path + ": its labels file " + (dir / name).string() + " is missing");
}

}  // namespace

void Dataset::CopyFeatures(std::size_t i, float* out) const {
  const auto d = static_cast<std::size_t>(num_features);
  if (byte_features()) {
    // A loop the compiler vectorises (bytes widened to floats, times the
    // scale): the conversion costs far less than the first layer's product.
    const std::uint8_t* in = bytes.data() + i * d;
    const float scale = byte_scale;
    for (std::size_t f = 0; f < d; ++f) out[f] = static_cast<float>(in[f]) * scale;
  } else {
    std::copy_n(x.data() + i * d, d, out);
  }
}

void Dataset::Gather(std::span<const std::size_t> rows, float* x_out, float* y_out) const {
  const auto d = static_cast<std::size_t>(num_features);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    assert(rows[i] < size());
    CopyFeatures(rows[i], x_out + i * d);
    y_out[i] = y[rows[i]];
  }
}

Dataset Dataset::Subset(const std::vector<std::size_t>& indices) const {
  Dataset out;
  out.num_features = num_features;
  out.num_classes = num_classes;
  out.byte_scale = byte_scale;
  const auto features = static_cast<std::size_t>(num_features);
  if (byte_features()) {
    out.bytes.resize(indices.size() * features);
  } else {
    out.x.resize(indices.size() * features);
  }
  out.y.resize(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    // An index out of range is a bug in the caller, not bad input.
    if (indices[i] >= size()) throw std::out_of_range("Dataset::Subset: index out of range");
    if (byte_features()) {
      std::copy_n(bytes.data() + indices[i] * features, features, out.bytes.data() + i * features);
    } else {
      std::copy_n(sample(indices[i]), features, out.x.data() + i * features);
    }
    out.y[i] = y[indices[i]];
  }
  return out;
}

void Dataset::ConvertToFloat() {
  if (!byte_features()) return;
  x.resize(bytes.size());
  for (std::size_t i = 0; i < size(); ++i) CopyFeatures(i, x.data() + i * num_features);
  bytes = {};  // releases the memory, unlike clear()
}

Dataset LoadDataset(const std::string& path, Split split, const CsvOptions& csv,
                    const RowPicker& pick) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const std::string prefix = split == Split::kTrain ? "train" : "t10k";
    // Two statements: the images file is looked for (and missed) first.
    const std::string images = FindIdx(path, prefix + "-images-idx3-ubyte");
    return LoadIdx(images, FindIdx(path, prefix + "-labels-idx1-ubyte"), pick);
  }
  if (!Exists(path)) throw Error(path + ": no such file or directory");
  const std::string name = fs::path(path).filename().string();
  const std::size_t at = name.find("images-idx3");
  if (at != std::string::npos) return LoadIdx(path, LabelsBeside(path, at), pick);
  Dataset data = LoadCsv(path, csv);
  if (pick) {
    Dataset targets;
    targets.num_classes = data.num_classes;
    targets.y = data.y;
    data = data.Subset(pick(targets));
  }
  return data;
}

Standardizer Standardizer::Fit(const Dataset& data) {
  const auto d = static_cast<std::size_t>(data.num_features);
  const std::size_t n = data.size();
  Standardizer s;
  s.mean.assign(d, 0.0f);
  s.stddev.assign(d, 1.0f);
  if (n == 0) return s;
  // Two passes in double: the one-pass sum of squares loses everything to
  // cancellation on features with a large mean and a small spread.
  std::vector<double> mean(d, 0.0), var(d, 0.0);
  std::vector<float> x(d);
  for (std::size_t i = 0; i < n; ++i) {
    data.CopyFeatures(i, x.data());
    for (std::size_t f = 0; f < d; ++f) mean[f] += x[f];
  }
  for (double& m : mean) m /= static_cast<double>(n);
  for (std::size_t i = 0; i < n; ++i) {
    data.CopyFeatures(i, x.data());
    for (std::size_t f = 0; f < d; ++f) {
      const double dev = x[f] - mean[f];
      var[f] += dev * dev;
    }
  }
  for (std::size_t f = 0; f < d; ++f) {
    s.mean[f] = static_cast<float>(mean[f]);
    const auto sd = static_cast<float>(std::sqrt(var[f] / static_cast<double>(n)));
    // Constant features (and spreads too small for a float) stay unscaled
    // rather than becoming inf or NaN.
    if (std::isnormal(sd)) s.stddev[f] = sd;
  }
  return s;
}

void Standardizer::Apply(Dataset& data) const {
  const auto d = static_cast<std::size_t>(data.num_features);
  if (mean.size() != d || stddev.size() != d) {
    throw Error("the standardisation was fitted on " + std::to_string(mean.size()) +
                " features but the data has " + std::to_string(d));
  }
  data.ConvertToFloat();
  for (std::size_t i = 0; i < data.size(); ++i) {
    float* x = data.x.data() + i * d;
    for (std::size_t f = 0; f < d; ++f) x[f] = (x[f] - mean[f]) / stddev[f];
  }
}

}  // namespace fedsgd
