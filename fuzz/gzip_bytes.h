// GzipBytes: bytes wrapped in a gzip stream, in memory.
//
// The loader fuzz targets hand their input to the loaders both as it is and
// gzip-wrapped, so the fuzzer's mutations reach the parsers behind zlib too
// (a raw input reaches zlib's own checks of a corrupt stream); the seed
// writer uses it for the .gz seeds. Reentrant; costs the output's size.
// Throws std::runtime_error if zlib fails (out of memory).
#pragma once

#include <zlib.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace fedsgd::fuzz {

inline std::string GzipBytes(std::string_view bytes) {
  z_stream z{};
  // 15 window bits + 16: a gzip header and trailer rather than zlib's.
  if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("deflateInit2 failed");
  }
  std::string out(deflateBound(&z, static_cast<uLong>(bytes.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (status != Z_STREAM_END) throw std::runtime_error("deflate did not finish");
  return out;
}

}  // namespace fedsgd::fuzz
