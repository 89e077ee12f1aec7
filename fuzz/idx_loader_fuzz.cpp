// Fuzz target: LoadIdx (shared/src/idx_loader.cpp) and the gzip reader
// behind it (gzip_file.cpp).
//
// Byte 0: bit 0 gzip-wraps the images file, bit 1 the labels file; bytes
// 1-2 (little-endian) the length of the images part, capped at what is
// left; the rest is the labels file. The loader may refuse with
// fedsgd::Error; any other exception or a sanitizer report is a finding. A
// data set it returns must be consistent: rows * cols features per sample,
// pixels in [0, 1], labels integers in [0, num_classes). The same files are
// loaded again keeping every other image (the streaming path of a shard),
// which must refuse exactly when the whole load does and otherwise give
// those images.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "gzip_bytes.h"
#include "temp_file.h"

namespace {

[[noreturn]] void Broken(const char* property) {
  std::fprintf(stderr, "idx_loader_fuzz: property broken: %s\n", property);
  std::abort();
}

void CheckDataset(const fedsgd::Dataset& d) {
  if (d.num_features < 1 || d.num_classes < 1) Broken("no features or no classes");
  if (!d.x.empty()) Broken("IDX pixels converted to floats");
  if (d.bytes.size() != d.size() * static_cast<std::size_t>(d.num_features)) Broken("bytes size");
  if (!(d.byte_scale * 255 <= 1.0f && d.byte_scale > 0)) Broken("pixels scaled outside [0, 1]");
  for (const float y : d.y) {
    if (!(y >= 0 && y < static_cast<float>(d.num_classes)) || y != static_cast<float>(int(y))) {
      Broken("a label outside [0, num_classes)");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  static const fedsgd::fuzz::TempFile images_plain("images-idx3-ubyte");
  static const fedsgd::fuzz::TempFile images_gz("images-idx3-ubyte.gz");
  static const fedsgd::fuzz::TempFile labels_plain("labels-idx1-ubyte");
  static const fedsgd::fuzz::TempFile labels_gz("labels-idx1-ubyte.gz");
  const bool gzip_images = (data[0] & 1) != 0;
  const bool gzip_labels = (data[0] & 2) != 0;
  const std::size_t want = data[1] | std::size_t{data[2]} << 8;
  const std::string_view rest(reinterpret_cast<const char*>(data + 3), size - 3);
  const std::string_view images = rest.substr(0, want);
  const std::string_view labels = rest.substr(images.size());

  const auto& images_file = gzip_images ? images_gz : images_plain;
  const auto& labels_file = gzip_labels ? labels_gz : labels_plain;
  images_file.Write(gzip_images ? fedsgd::fuzz::GzipBytes(images) : std::string(images));
  labels_file.Write(gzip_labels ? fedsgd::fuzz::GzipBytes(labels) : std::string(labels));
  std::optional<fedsgd::Dataset> whole;
  try {
    whole = fedsgd::LoadIdx(images_file.path(), labels_file.path());
    CheckDataset(*whole);
  } catch (const fedsgd::Error&) {
    // refused with a message naming the file
  }
  const auto every_other = [](const fedsgd::Dataset& targets) {
    std::vector<std::size_t> rows;
    for (std::size_t i = 0; i < targets.size(); i += 2) rows.push_back(i);
    return rows;
  };
  std::optional<fedsgd::Dataset> picked;
  try {
    picked = fedsgd::LoadIdx(images_file.path(), labels_file.path(), every_other);
    CheckDataset(*picked);
  } catch (const fedsgd::Error&) {
  }
  if (whole.has_value() != picked.has_value()) Broken("a picked load disagrees on refusing");
  if (whole) {
    std::vector<std::size_t> rows = every_other(*whole);
    const fedsgd::Dataset cut = whole->Subset(rows);
    if (cut.bytes != picked->bytes || cut.y != picked->y) Broken("picked images differ");
  }
  return 0;
}
