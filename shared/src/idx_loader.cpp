// LoadIdx: the IDX format of MNIST and Fashion-MNIST (see dataset.h).
//
// An IDX file is a big-endian header (magic 0x0000TTDD: type TT, 0x08 for
// unsigned bytes, and DD dimensions; then one 32-bit size per dimension)
// followed by the data. Everything the header promises is checked against
// the bytes that follow before any of them is used, so a truncated or
// mismatched file is an Error, never a read past the end.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <limits>

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

// Checks the header of an IDX file of unsigned bytes with `dims` dimensions
// and that exactly as many bytes follow as the sizes multiply to. Returns the
// sizes; the data starts at 4 + 4 * dims.
std::vector<std::size_t> CheckIdxHeader(const std::string& path, const std::string& bytes, int dims,
                                        const char* what) {
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(dims);
  auto too_short = [&] {
    return Error(path + ": too short for an IDX " + what + " file (" +
                 std::to_string(bytes.size()) + " bytes)");
  };
  // The magic number first: handed the wrong file, a person learns that,
  // not merely that it is short.
  if (bytes.size() < 4) throw too_short();
  const std::uint32_t magic = BigEndian32(bytes, 0);
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
  if (bytes.size() < header) throw too_short();
  std::vector<std::size_t> sizes;
  // The product of the sizes is checked against the payload without ever
  // overflowing, so a hostile header cannot wrap around to a small number.
  const std::size_t payload = bytes.size() - header;
  std::size_t total = 1;
  bool too_big = false;
  for (int i = 0; i < dims; ++i) {
    sizes.push_back(BigEndian32(bytes, 4 + 4 * static_cast<std::size_t>(i)));
    if (sizes.back() != 0 && total > std::numeric_limits<std::size_t>::max() / sizes.back()) {
      too_big = true;
    } else {
      total *= sizes.back();
    }
  }
  if (too_big || total != payload) {
    throw Error(path + ": the IDX header promises " +
                (too_big ? std::string("more") : std::to_string(total)) + " bytes of data but " +
                std::to_string(payload) + " follow (truncated or corrupt file)");
  }
  return sizes;
}

}  // namespace

Dataset LoadIdx(const std::string& images_path, const std::string& labels_path) {
  const std::string images = ReadWholeFile(images_path);
  const std::vector<std::size_t> image_dims = CheckIdxHeader(images_path, images, 3, "images");
  const std::string labels = ReadWholeFile(labels_path);
  const std::vector<std::size_t> label_dims = CheckIdxHeader(labels_path, labels, 1, "labels");

  const std::size_t n = image_dims[0];
  if (n != label_dims[0]) {
    throw Error(images_path + " holds " + std::to_string(n) + " images but " + labels_path +
                " holds " + std::to_string(label_dims[0]) + " labels");
  }
  if (n == 0) throw Error(images_path + ": holds no images");
  const std::size_t features = image_dims[1] * image_dims[2];
  if (features == 0 || features > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
    throw Error(images_path + ": images of " + std::to_string(image_dims[1]) + " x " +
                std::to_string(image_dims[2]) + " pixels are not usable");
  }

  Dataset d;
  d.num_features = static_cast<int>(features);
  // A table, because 256 divisions beat 47 million on Fashion-MNIST.
  std::array<float, 256> scale;
  for (int v = 0; v < 256; ++v) scale[v] = static_cast<float>(v) / 255.0f;
  const auto* pixels = reinterpret_cast<const unsigned char*>(images.data() + 16);
  d.x.resize(n * features);
  for (std::size_t i = 0; i < d.x.size(); ++i) d.x[i] = scale[pixels[i]];

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
  return d;
}

}  // namespace fedsgd
