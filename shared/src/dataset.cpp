// Data set loaders: IDX (MNIST format) and CSV, plain or gzip (see dataset.h).
//
// Files are read whole through zlib's gz* functions, which read plain files
// transparently too, so .gz and uncompressed inputs take the same path.
#include "fedsgd/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <memory>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// Reads a whole file, decompressing gzip. Throws Error naming the file.
std::string ReadFile(const std::string& path) {
  if (!std::filesystem::exists(path)) throw Error(path + ": no such file");
  if (std::filesystem::is_directory(path)) throw Error(path + ": is a directory, not a file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> file(gzopen(path.c_str(), "rb"), gzclose);
  if (!file) throw Error(path + ": cannot open");
  gzbuffer(file.get(), 1 << 17);
  std::string data;
  char buf[1 << 16];
  for (;;) {
    const int got = gzread(file.get(), buf, sizeof buf);
    if (got < 0) {
      int code = 0;
      const char* msg = gzerror(file.get(), &code);
      throw Error(path + ": read error (" + (msg ? msg : "unknown") + ")");
    }
    if (got == 0) break;
    data.append(buf, static_cast<std::size_t>(got));
  }
  // gzread stops quietly at a truncated gzip stream; gzerror tells.
  int code = Z_OK;
  gzerror(file.get(), &code);
  if (code != Z_OK && code != Z_STREAM_END) throw Error(path + ": truncated or corrupt gzip data");
  return data;
}

std::uint32_t BigEndian32(const std::string& d, std::size_t at) {
  return (static_cast<std::uint32_t>(static_cast<unsigned char>(d[at])) << 24) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(d[at + 1])) << 16) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(d[at + 2])) << 8) |
         static_cast<std::uint32_t>(static_cast<unsigned char>(d[at + 3]));
}

// Checks an IDX header: unsigned bytes, `dims` dimensions, and that the
// payload has exactly the size the dimensions say. Returns the dimensions.
std::vector<std::size_t> IdxDims(const std::string& path, const std::string& d, int dims) {
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(dims);
  if (d.size() < header) throw Error(path + ": too short for an IDX file");
  const std::uint32_t magic = BigEndian32(d, 0);
  if ((magic >> 16) != 0 || ((magic >> 8) & 0xff) != 0x08) {
    throw Error(path + ": not an IDX file of unsigned bytes (magic number " +
                std::to_string(magic) + ")");
  }
  if (static_cast<int>(magic & 0xff) != dims) {
    throw Error(path + ": expected an IDX file with " + std::to_string(dims) +
                " dimensions, found " + std::to_string(magic & 0xff));
  }
  std::vector<std::size_t> sizes;
  std::size_t total = 1;
  for (int i = 0; i < dims; ++i) {
    sizes.push_back(BigEndian32(d, 4 + 4 * static_cast<std::size_t>(i)));
    total *= sizes.back();
  }
  if (d.size() - header != total) {
    throw Error(path + ": the header promises " + std::to_string(total) + " bytes of data but " +
                std::to_string(d.size() - header) + " follow (truncated or corrupt file)");
  }
  return sizes;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The file `name` or `name.gz` in dir, whichever exists.
std::string FindIdx(const std::filesystem::path& dir, const std::string& name) {
  for (const std::string& candidate : {name, name + ".gz"}) {
    if (std::filesystem::exists(dir / candidate)) return (dir / candidate).string();
  }
  throw Error(dir.string() + ": no " + name + " or " + name + ".gz in this directory");
}

}  // namespace

Dataset Dataset::Subset(const std::vector<std::size_t>& indices) const {
  Dataset out;
  out.num_features = num_features;
  out.num_classes = num_classes;
  out.x.resize(indices.size() * static_cast<std::size_t>(num_features));
  out.y.resize(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    std::copy_n(sample(indices[i]), num_features, out.x.data() + i * num_features);
    out.y[i] = y[indices[i]];
  }
  return out;
}

Dataset LoadIdx(const std::string& images_path, const std::string& labels_path) {
  const std::string images = ReadFile(images_path);
  const std::string labels = ReadFile(labels_path);
  const std::vector<std::size_t> idims = IdxDims(images_path, images, 3);
  const std::vector<std::size_t> ldims = IdxDims(labels_path, labels, 1);
  if (idims[0] != ldims[0]) {
    throw Error(images_path + " holds " + std::to_string(idims[0]) + " images but " + labels_path +
                " holds " + std::to_string(ldims[0]) + " labels");
  }
  if (idims[0] == 0) throw Error(images_path + ": no images");
  Dataset d;
  d.num_features = static_cast<int>(idims[1] * idims[2]);
  const std::size_t n = idims[0];
  d.x.resize(n * static_cast<std::size_t>(d.num_features));
  const auto* pixels = reinterpret_cast<const unsigned char*>(images.data() + 16);
  for (std::size_t i = 0; i < d.x.size(); ++i) d.x[i] = static_cast<float>(pixels[i]) / 255.0f;
  d.y.resize(n);
  int max_label = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int label = static_cast<unsigned char>(labels[8 + i]);
    max_label = std::max(max_label, label);
    d.y[i] = static_cast<float>(label);
  }
  d.num_classes = max_label + 1;
  return d;
}

Dataset LoadCsv(const std::string& path, const CsvOptions& options) {
  const std::string text = ReadFile(path);
  Dataset d;
  std::vector<float> row;
  std::size_t columns = 0;
  std::size_t line_no = 0;
  int max_label = -1;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_no == 1 && options.header) continue;
    if (line.empty()) {
      // Blank lines are allowed only at the end of the file.
      if (text.find_first_not_of("\r\n", pos) == std::string::npos) break;
      throw Error(path + ":" + std::to_string(line_no) + ": empty line inside the data");
    }
    row.clear();
    std::size_t col_start = 0;
    for (std::size_t col = 1;; ++col) {
      std::size_t col_end = line.find(options.delimiter, col_start);
      if (col_end == std::string_view::npos) col_end = line.size();
      std::string_view field = line.substr(col_start, col_end - col_start);
      while (!field.empty() && field.front() == ' ') field.remove_prefix(1);
      while (!field.empty() && field.back() == ' ') field.remove_suffix(1);
      float value = 0;
      const auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
      if (field.empty() || ec != std::errc() || p != field.data() + field.size() ||
          !std::isfinite(value)) {
        throw Error(path + ":" + std::to_string(line_no) + ":" + std::to_string(col) +
                    ": expected a number, found \"" + std::string(field) + "\"");
      }
      row.push_back(value);
      if (col_end == line.size()) break;
      col_start = col_end + 1;
    }
    if (columns == 0) {
      columns = row.size();
      if (columns < 2) {
        throw Error(path + ":" + std::to_string(line_no) +
                    ": a row needs at least two columns (features and a label)");
      }
      const int lc = options.label_column;
      if (lc < -1 || lc >= static_cast<int>(columns)) {
        throw Error(path + ": label column " + std::to_string(lc) +
                    " does not exist (the file has " + std::to_string(columns) +
                    " columns, numbered from 0)");
      }
      d.num_features = static_cast<int>(columns - 1);
    } else if (row.size() != columns) {
      throw Error(path + ":" + std::to_string(line_no) + ": expected " + std::to_string(columns) +
                  " columns like the first row, found " + std::to_string(row.size()));
    }
    const std::size_t label_col =
        options.label_column < 0 ? columns - 1 : static_cast<std::size_t>(options.label_column);
    const float label = row[label_col];
    if (options.classification) {
      if (label < 0 || label != std::floor(label) || label > 1e6f) {
        throw Error(path + ":" + std::to_string(line_no) + ":" + std::to_string(label_col + 1) +
                    ": a class label must be a whole number >= 0, found " + std::to_string(label));
      }
      max_label = std::max(max_label, static_cast<int>(label));
    }
    for (std::size_t c = 0; c < columns; ++c) {
      if (c != label_col) d.x.push_back(row[c]);
    }
    d.y.push_back(label);
  }
  if (d.y.empty()) throw Error(path + ": no data rows");
  d.num_classes = options.classification ? max_label + 1 : 0;
  return d;
}

Dataset LoadDataset(const std::string& path, Split split, const CsvOptions& csv) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) {
    const std::string prefix = split == Split::kTrain ? "train" : "t10k";
    return LoadIdx(FindIdx(path, prefix + "-images-idx3-ubyte"),
                   FindIdx(path, prefix + "-labels-idx1-ubyte"));
  }
  if (!fs::exists(path)) throw Error(path + ": no such file or directory");
  const std::string name = fs::path(path).filename().string();
  const std::size_t at = name.find("images-idx3");
  if (at != std::string::npos) {
    std::string labels_name = name;
    labels_name.replace(at, 11, "labels-idx1");
    const fs::path labels = fs::path(path).parent_path() / labels_name;
    if (!fs::exists(labels)) {
      throw Error(path + ": the labels file " + labels.string() + " is missing");
    }
    return LoadIdx(path, labels.string());
  }
  if (EndsWith(name, ".csv") || EndsWith(name, ".csv.gz") || EndsWith(name, ".txt") ||
      EndsWith(name, ".txt.gz")) {
    return LoadCsv(path, csv);
  }
  throw Error(path +
              ": unknown data format (expected a directory of IDX files, an "
              "*images-idx3* file, or a .csv / .csv.gz file)");
}

Standardizer Standardizer::Fit(const Dataset& data) {
  Standardizer s;
  const std::size_t d = data.num_features;
  std::vector<double> sum(d, 0.0), sq(d, 0.0);
  for (std::size_t i = 0; i < data.size(); ++i) {
    const float* x = data.sample(i);
    for (std::size_t f = 0; f < d; ++f) {
      sum[f] += x[f];
      sq[f] += static_cast<double>(x[f]) * x[f];
    }
  }
  const double n = static_cast<double>(std::max<std::size_t>(data.size(), 1));
  s.mean.resize(d);
  s.stddev.resize(d);
  for (std::size_t f = 0; f < d; ++f) {
    const double mean = sum[f] / n;
    const double var = std::max(0.0, sq[f] / n - mean * mean);
    s.mean[f] = static_cast<float>(mean);
    s.stddev[f] = var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f;
  }
  return s;
}

void Standardizer::Apply(Dataset& data) const {
  if (mean.size() != static_cast<std::size_t>(data.num_features)) {
    throw Error("standardisation was fitted on " + std::to_string(mean.size()) +
                " features but the data has " + std::to_string(data.num_features));
  }
  const std::size_t d = data.num_features;
  for (std::size_t i = 0; i < data.size(); ++i) {
    float* x = data.x.data() + i * d;
    for (std::size_t f = 0; f < d; ++f) x[f] = (x[f] - mean[f]) / stddev[f];
  }
}

}  // namespace fedsgd
