// .npy encoding and decoding (see fedsgd/npy.h).
#include "fedsgd/npy.h"

#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

static_assert(std::endian::native == std::endian::little, "the .npy data is '<f4'");

constexpr std::string_view kMagic("\x93NUMPY", 6);

// The value of 'key' in the header's Python dict literal, up to the next
// top-level comma (or the closing brace): "'<f4'", "False", "(10,)".
std::string_view Field(std::string_view header, std::string_view key) {
  const std::string quoted = "'" + std::string(key) + "'";
  std::size_t at = header.find(quoted);
  if (at == std::string_view::npos) return {};
  at = header.find(':', at + quoted.size());
  if (at == std::string_view::npos) return {};
  std::size_t begin = at + 1;
  while (begin < header.size() && header[begin] == ' ') ++begin;
  std::size_t end = begin;
  int depth = 0;
  while (end < header.size()) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    ++end;
  }
  std::string_view value = header.substr(begin, end - begin);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  return value;
}

// "(n,)", "(n, 1)", "(1, n)" -> n; anything else -> false.
bool VectorLength(std::string_view shape, std::uint64_t& n) {
  if (shape.size() < 3 || shape.front() != '(' || shape.back() != ')') return false;
  shape = shape.substr(1, shape.size() - 2);
  std::vector<std::uint64_t> dims;
  while (!shape.empty()) {
    while (!shape.empty() && shape.front() == ' ') shape.remove_prefix(1);
    if (shape.empty()) break;
    std::uint64_t d = 0;
    const auto r = std::from_chars(shape.data(), shape.data() + shape.size(), d);
    if (r.ec != std::errc() || r.ptr == shape.data()) return false;
    dims.push_back(d);
    shape.remove_prefix(static_cast<std::size_t>(r.ptr - shape.data()));
    while (!shape.empty() && shape.front() == ' ') shape.remove_prefix(1);
    if (!shape.empty()) {
      if (shape.front() != ',') return false;
      shape.remove_prefix(1);
    }
  }
  if (dims.size() == 1) {
    n = dims[0];
    return true;
  }
  if (dims.size() == 2 && (dims[0] == 1 || dims[1] == 1)) {
    n = dims[0] * dims[1];
    return true;
  }
  return false;
}

}  // namespace

std::string EncodeNpy(std::span<const float> values) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(values.size()) + ",), }";
  // magic (6) + version (2) + header length (2) + header + '\n': a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const std::size_t at = out.size();
  out.resize(at + values.size() * sizeof(float));
  if (!values.empty()) std::memcpy(out.data() + at, values.data(), values.size() * sizeof(float));
  return out;
}

std::vector<float> DecodeNpy(std::string_view bytes, const std::string& what) {
  const auto bad = [&](const std::string& why) {
    return Error(what + ": not a float32 vector .npy file: " + why);
  };
  if (bytes.size() < 10 || bytes.substr(0, 6) != kMagic) throw bad("no NumPy magic");
  const auto major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_length = 0, header_at = 0;
  if (major == 1) {
    header_length = static_cast<unsigned char>(bytes[8]) |
                    static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8;
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("truncated header");
    for (int i = 3; i >= 0; --i) {
      header_length = header_length << 8 | static_cast<unsigned char>(bytes[8 + i]);
    }
    header_at = 12;
  } else {
    throw bad("format version " + std::to_string(major) + " (1 to 3 are known)");
  }
  if (header_length > bytes.size() - header_at) throw bad("truncated header");
  const std::string_view header = bytes.substr(header_at, header_length);
  const std::string_view descr = Field(header, "descr");
  if (descr != "'<f4'" && descr != "'=f4'" && descr != "'f4'") {
    throw bad("dtype " + std::string(descr.empty() ? "missing" : descr) + ", not '<f4' (float32)");
  }
  if (Field(header, "fortran_order") != "False" && Field(header, "fortran_order") != "True") {
    throw bad("fortran_order missing");
  }
  std::uint64_t n = 0;
  const std::string_view shape = Field(header, "shape");
  if (!VectorLength(shape, n)) throw bad("shape " + std::string(shape) + " is not a vector");
  const std::string_view data = bytes.substr(header_at + header_length);
  if (n > data.size() / sizeof(float) || data.size() != n * sizeof(float)) {
    throw bad(std::to_string(n) + " floats declared, " + std::to_string(data.size()) +
              " data bytes present");
  }
  std::vector<float> values(n);
  if (n > 0) std::memcpy(values.data(), data.data(), data.size());
  return values;
}

}  // namespace fedsgd
