// LoadCsv: numeric comma-separated files, plain or gzip (see dataset.h).
//
// Every field must be a finite number that fits a float; one column is the
// label. Anything else is an Error at "file:line:column" (1-based), because a
// silently skipped row or a NaN read as a feature would only show up much
// later as a model that does not learn.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "gzip_file.h"

namespace fedsgd {
namespace {

// More classes than this is almost surely an id column or a regression
// target picked as the label by mistake.
constexpr double kMaxClassLabel = 999'999;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A field as it can be shown in a message: short, and printable even when
// the "CSV" is in fact a binary file.
std::string Quote(std::string_view field) {
  std::string out = "\"";
  for (std::size_t i = 0; i < field.size() && i < 40; ++i) {
    const auto c = static_cast<unsigned char>(field[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (field.size() > 40) out += "...";
  return out + "\"";
}

// std::from_chars: locale-independent and fast. Parsed as double so that
// values too small for a float become 0 instead of an error, while values
// too large for one are refused.
bool ParseNumber(std::string_view field, float& value) {
  if (field.size() > 1 && field.front() == '+') field.remove_prefix(1);
  if (field.empty() || field.front() == '+') return false;
  double v = 0;
  const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc() || end != field.data() + field.size()) return false;
  if (!std::isfinite(v) || std::fabs(v) > std::numeric_limits<float>::max()) return false;
  value = static_cast<float>(v);
  return true;
}

std::string Format(float v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

class CsvReader {
 public:
  CsvReader(const std::string& path, const CsvOptions& options) : path_(path), options_(options) {}

  Dataset Read() {
    const std::string text = ReadWholeFile(path_);
    std::string_view rest = text;
    if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);  // a UTF-8 byte order mark
    while (!rest.empty()) {
      std::size_t end = rest.find('\n');
      if (end == std::string_view::npos) end = rest.size();
      std::string_view line = rest.substr(0, end);
      rest.remove_prefix(std::min(end + 1, rest.size()));
      ++line_no_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line_no_ == 1 && options_.header) continue;
      if (Trim(line).empty()) {
        // Blank lines only at the end (editors add them); inside the data
        // they mean something went wrong when the file was made.
        if (rest.find_first_not_of(" \t\r\n") == std::string_view::npos) break;
        throw Error(Where() + ": empty line inside the data");
      }
      ReadRow(line);
    }
    if (data_.y.empty()) throw Error(path_ + ": no data rows");
    data_.num_classes = options_.classification ? max_label_ + 1 : 0;
    return std::move(data_);
  }

 private:
  std::string Where() const { return path_ + ":" + std::to_string(line_no_); }
  std::string Where(std::size_t column) const { return Where() + ":" + std::to_string(column); }

  void ReadRow(std::string_view line) {
    row_.clear();
    for (;;) {
      const std::size_t end = std::min(line.find(options_.delimiter), line.size());
      const std::string_view field = Trim(line.substr(0, end));
      float value = 0;
      if (!ParseNumber(field, value)) {
        std::string message = Where(row_.size() + 1) + ": expected a number, found " + Quote(field);
        if (line_no_ == 1 && !options_.header) message += " (is the first line a header?)";
        throw Error(message);
      }
      row_.push_back(value);
      if (end == line.size()) break;
      line.remove_prefix(end + 1);
    }
    if (columns_ == 0) FirstRow();
    if (row_.size() != columns_) {
      throw Error(Where() + ": expected " + std::to_string(columns_) +
                  " columns like the first data row, found " + std::to_string(row_.size()));
    }
    const float label = row_[label_column_];
    if (options_.classification) {
      if (label < 0 || label != std::floor(label)) {
        throw Error(Where(label_column_ + 1) +
                    ": a class label must be a whole number >= 0, found " + Format(label));
      }
      if (label > kMaxClassLabel) {
        // 1e24 fits no integer type: casting it was undefined behaviour
        // (found by fuzz/csv_loader_fuzz.cpp).
        const std::string shown =
            label < 1e18f ? std::to_string(static_cast<long long>(label)) : Format(label);
        throw Error(Where(label_column_ + 1) + ": class label " + shown +
                    " is implausibly large (is this column a regression target?)");
      }
      max_label_ = std::max(max_label_, static_cast<int>(label));
    }
    for (std::size_t c = 0; c < columns_; ++c) {
      if (c != label_column_) data_.x.push_back(row_[c]);
    }
    data_.y.push_back(label);
  }

  // The first data row fixes the number of columns for the whole file.
  void FirstRow() {
    columns_ = row_.size();
    if (columns_ < 2) {
      throw Error(Where() + ": a row needs at least two columns (features and a label), found " +
                  std::to_string(columns_) + " (is the delimiter '" +
                  std::string(1, options_.delimiter) + "' right?)");
    }
    const int lc = options_.label_column;
    if (lc < -1 || lc >= static_cast<int>(columns_)) {
      throw Error(path_ + ": label column " + std::to_string(lc) + " does not exist (rows have " +
                  std::to_string(columns_) + " columns, numbered from 0; -1 is the last)");
    }
    label_column_ = lc < 0 ? columns_ - 1 : static_cast<std::size_t>(lc);
    data_.num_features = static_cast<int>(columns_ - 1);
  }

  const std::string& path_;
  const CsvOptions& options_;
  Dataset data_;
  std::vector<float> row_;
  std::size_t columns_ = 0;
  std::size_t label_column_ = 0;
  std::size_t line_no_ = 0;
  int max_label_ = -1;
};

}  // namespace

Dataset LoadCsv(const std::string& path, const CsvOptions& options) {
  return CsvReader(path, options).Read();
}

}  // namespace fedsgd
