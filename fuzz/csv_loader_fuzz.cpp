// Fuzz target: LoadCsv (shared/src/csv_loader.cpp), plain and gzip-wrapped.
//
// Byte 0 picks the options: bits 0-1 the label column (-1, 0, 1, 2), bit 2
// header, bit 3 classification, bits 4-5 the delimiter (, ; tab space), bit
// 6 whether the rest is gzip-wrapped before it is written to the file. The
// loader may refuse with fedsgd::Error; any other exception or a sanitizer
// report is a finding. A data set it returns must be consistent: x holds
// size() * num_features finite floats, every label is finite and, for
// classification, an integer in [0, num_classes).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "gzip_bytes.h"
#include "temp_file.h"

namespace {

[[noreturn]] void Broken(const char* property) {
  std::fprintf(stderr, "csv_loader_fuzz: property broken: %s\n", property);
  std::abort();
}

void CheckDataset(const fedsgd::Dataset& d, bool classification) {
  if (d.num_features < 1) Broken("no features");
  if (d.x.size() != d.size() * static_cast<std::size_t>(d.num_features)) Broken("x size");
  for (const float v : d.x) {
    if (!std::isfinite(v)) Broken("a feature is not finite");
  }
  if (classification != (d.num_classes > 0)) Broken("num_classes does not match the task");
  for (const float y : d.y) {
    if (!std::isfinite(y)) Broken("a label is not finite");
    if (classification && (y < 0 || y >= static_cast<float>(d.num_classes) || y != std::floor(y))) {
      Broken("a class label outside [0, num_classes)");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const fedsgd::fuzz::TempFile csv("data.csv");
  const std::uint8_t choice = data[0];
  fedsgd::CsvOptions options;
  options.label_column = (choice & 3) - 1;
  options.header = (choice & 4) != 0;
  options.classification = (choice & 8) != 0;
  options.delimiter = ",;\t "[(choice >> 4) & 3];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  csv.Write((choice & 64) ? fedsgd::fuzz::GzipBytes(text) : std::string(text));
  try {
    CheckDataset(fedsgd::LoadCsv(csv.path(), options), options.classification);
  } catch (const fedsgd::Error&) {
    // refused with a message naming the file, line and column
  }
  return 0;
}
