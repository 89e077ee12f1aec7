// LoadIdx: the IDX format of MNIST and Fashion-MNIST (see dataset.h).
//
// An IDX file is a big-endian header (magic 0x0000TTDD: type TT, 0x08 for
// unsigned bytes, and DD dimensions; then one 32-bit size per dimension)
// followed by the data. Everything the header promises is checked against
// the bytes that follow, so a truncated or mismatched file is an Error,
// never a read past the end. The labels file is small and read whole; the
// images file is streamed (plain or gzip alike), keeping only the picked
// rows, and no more is allocated than the file can hold.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <stdexcept>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "gzip_file.h"

namespace fedsgd {
namespace {

constexpr std::uint32_t kUnsignedByteType = 0x08;

std::uint32_t BigEndian32(const std::string& bytes, std::size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at);
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::string Hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", static_cast<unsigned>(v));
  return buf;
}

// Checks the header of an IDX file of unsigned bytes with `dims` dimensions:
// `header` is the file's first 4 + 4 * dims bytes, or the whole file when it
// is shorter. Returns the sizes.
std::vector<std::size_t> CheckIdxHeader(const std::string& path, const std::string& header,
                                        int dims, const char* what) {
  const std::size_t length = 4 + 4 * static_cast<std::size_t>(dims);
  auto too_short = [&] {
    return Error(path + ": too short for an IDX " + what + " file (" +
                 std::to_string(header.size()) + " bytes)");
  };
  // The magic number first: handed the wrong file, a person learns that,
  // not merely that it is short.
  if (header.size() < 4) throw too_short();
  const std::uint32_t magic = BigEndian32(header, 0);
  const std::uint32_t expected = (kUnsignedByteType << 8) | static_cast<std::uint32_t>(dims);
  if ((magic >> 16) != 0 || ((magic >> 8) & 0xff) != kUnsignedByteType) {
    throw Error(path + ": not an IDX file of unsigned bytes (magic number " + Hex32(magic) +
                ", expected " + Hex32(expected) + " for " + what + ")");
  }
  if (magic != expected) {
    throw Error(path + ": an IDX file with " + std::to_string(magic & 0xff) + " dimensions, but " +
                what + " have " + std::to_string(dims) + " (magic number " + Hex32(magic) +
                ", expected " + Hex32(expected) + ")");
  }
  if (header.size() < length) throw too_short();
  std::vector<std::size_t> sizes;
  for (int i = 0; i < dims; ++i) {
    sizes.push_back(BigEndian32(header, 4 + 4 * static_cast<std::size_t>(i)));
  }
  return sizes;
}

// The product of the sizes, computed without ever overflowing, so a hostile
// header cannot wrap around to a small number; nullopt when it would.
std::optional<std::size_t> Product(const std::vector<std::size_t>& sizes) {
  std::size_t total = 1;
  for (const std::size_t s : sizes) {
    if (s != 0 && total > std::numeric_limits<std::size_t>::max() / s) return std::nullopt;
    total *= s;
  }
  return total;
}

Error PayloadMismatch(const std::string& path, std::optional<std::size_t> promised,
                      std::size_t follow) {
  return Error(path + ": the IDX header promises " +
               (promised ? std::to_string(*promised) : std::string("more")) +
               " bytes of data but " + std::to_string(follow) +
               " follow (truncated or corrupt file)");
}

// The labels file, whole (one byte per sample: small).
std::string ReadLabels(const std::string& path, std::size_t* count) {
  std::string bytes = ReadWholeFile(path);
  const std::vector<std::size_t> dims =
      CheckIdxHeader(path, bytes.substr(0, std::min<std::size_t>(bytes.size(), 8)), 1, "labels");
  if (dims[0] != bytes.size() - 8) throw PayloadMismatch(path, dims[0], bytes.size() - 8);
  *count = dims[0];
  return bytes;
}

}  // namespace

Dataset LoadIdx(const std::string& images_path, const std::string& labels_path,
                const RowPicker& pick) {
  // The images header first: handed two wrong files, a person hears about
  // the images. Their pixels are streamed after the labels are known.
  GzipReader images(images_path);
  std::string header(16, '\0');
  header.resize(images.Read(header.data(), header.size()));
  const std::vector<std::size_t> image_dims = CheckIdxHeader(images_path, header, 3, "images");
  const std::optional<std::size_t> promised = Product(image_dims);
  // A promise the file cannot keep is refused before anything is allocated
  // for it; the message still says how many bytes do follow.
  if (!promised || *promised > images.UpperBound()) {
    throw PayloadMismatch(images_path, promised, images.Skip());
  }
  std::size_t n_labels = 0;
  const std::string labels = ReadLabels(labels_path, &n_labels);

  const std::size_t n = image_dims[0];
  if (n != n_labels) {
    throw Error(images_path + " holds " + std::to_string(n) + " images but " + labels_path +
                " holds " + std::to_string(n_labels) + " labels");
  }
  const std::size_t features = image_dims[1] * image_dims[2];
  if (n != 0 &&
      (features == 0 || features > static_cast<std::size_t>(std::numeric_limits<int>::max()))) {
    throw Error(images_path + ": images of " + std::to_string(image_dims[1]) + " x " +
                std::to_string(image_dims[2]) + " pixels are not usable");
  }

  Dataset d;
  d.num_features = static_cast<int>(features);
  // Labels are unsigned bytes (the header check above refuses wider types),
  // so every label is a class index below 256.
  const auto* label_bytes = reinterpret_cast<const unsigned char*>(labels.data() + 8);
  d.y.resize(n);
  int max_label = 0;
  for (std::size_t i = 0; i < n; ++i) {
    max_label = std::max(max_label, int{label_bytes[i]});
    d.y[i] = static_cast<float>(label_bytes[i]);
  }
  d.num_classes = max_label + 1;

  std::vector<std::size_t> rows;
  if (pick) {
    rows = pick(d);
    for (std::size_t i = 0; i < rows.size(); ++i) {
      // A picker's mistake is a bug in the caller, not bad input.
      if (rows[i] >= n || (i > 0 && rows[i] <= rows[i - 1])) {
        throw std::out_of_range("LoadIdx: picked rows must ascend and be below the sample count");
      }
    }
  }
  const std::size_t kept = pick ? rows.size() : n;

  // Stream the pixels, keeping the picked images; every byte is read, so a
  // file that is too short or too long is caught whatever was picked.
  d.bytes.resize(kept * features);
  std::size_t consumed = 0;  // payload bytes read so far
  for (std::size_t k = 0; k < kept; ++k) {
    const std::size_t row = pick ? rows[k] : k;
    const std::size_t gap = row * features - consumed;
    std::size_t got = images.Skip(gap);
    if (got == gap) got += images.Read(d.bytes.data() + k * features, features);
    consumed += got;
    if (got != gap + features) throw PayloadMismatch(images_path, promised, consumed);
  }
  consumed += images.Skip();
  if (consumed != *promised) throw PayloadMismatch(images_path, promised, consumed);
  if (n == 0) throw Error(images_path + ": holds no images");
  if (pick) {
    std::vector<float> y(rows.size());
    for (std::size_t k = 0; k < rows.size(); ++k) y[k] = d.y[rows[k]];
    d.y = std::move(y);
  }
  return d;
}

}  // namespace fedsgd
