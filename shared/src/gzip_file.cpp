// ReadWholeFile and GzipReader: a file's bytes, plain or gzip, through zlib
// (see gzip_file.h).
#include "gzip_file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "fedsgd/error.h"

namespace fedsgd {

void GzipReader::Close::operator()(gzFile_s* f) const { gzclose(f); }

GzipReader::GzipReader(const std::string& path) : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) throw Error(path + ": no such file");
  if (status.type() == fs::file_type::directory) {
    throw Error(path + ": is a directory, not a file");
  }
  errno = 0;
  file_.reset(gzopen(path.c_str(), "rb"));
  if (!file_) {
    throw Error(path + ": cannot open (" + (errno != 0 ? std::strerror(errno) : "out of memory") +
                ")");
  }
  gzbuffer(file_.get(), 1 << 17);
}

GzipReader::~GzipReader() = default;

std::size_t GzipReader::Read(void* out, std::size_t n) {
  std::size_t length = 0;
  while (length < n) {
    const auto want = static_cast<unsigned>(std::min<std::size_t>(n - length, INT_MAX));
    const int got = gzread(file_.get(), static_cast<char*>(out) + length, want);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file_.get(), &code);
      if (code == Z_ERRNO) message = std::strerror(errno);
      throw Error(path_ + ": cannot read (" + (message ? message : "unknown error") +
                  "; a corrupt gzip file?)");
    }
    if (got == 0) {
      // At a gzip stream cut short gzread just stops, returning what it
      // had; only gzerror tells (Z_BUF_ERROR, "unexpected end of file").
      int code = Z_OK;
      gzerror(file_.get(), &code);
      if (code != Z_OK) throw Error(path_ + ": truncated or corrupt gzip data");
      break;
    }
    length += static_cast<std::size_t>(got);
  }
  return length;
}

std::size_t GzipReader::Skip(std::size_t n) {
  char buf[1 << 14];
  std::size_t total = 0;
  while (total < n) {
    const std::size_t want = std::min(sizeof buf, n - total);
    const std::size_t got = Read(buf, want);
    total += got;
    if (got < want) break;
  }
  return total;
}

std::size_t GzipReader::UpperBound() const {
  std::error_code ec;
  const std::uintmax_t on_disk = std::filesystem::file_size(path_, ec);
  if (ec) return static_cast<std::size_t>(-1);
  // Deflate expands by at most 1032:1 (a run of one byte, RFC 1951's
  // longest match per the shortest code).
  constexpr std::uintmax_t kMaxRatio = 1032;
  const std::uintmax_t bound = gzdirect(file_.get()) ? on_disk : on_disk * kMaxRatio;
  return static_cast<std::size_t>(std::min<std::uintmax_t>(bound, static_cast<std::size_t>(-1)));
}

std::string ReadWholeFile(const std::string& path) {
  GzipReader reader(path);
  // Read straight into the string, growing it geometrically; the plain file
  // size is a good first guess (a gzip file grows, and the loop handles it).
  std::string data;
  std::error_code ec;
  const std::uintmax_t on_disk = std::filesystem::file_size(path, ec);
  data.resize(ec ? std::size_t{1} << 16 : std::max<std::size_t>(on_disk + 1, 1 << 16));
  std::size_t length = 0;
  for (;;) {
    if (length == data.size()) data.resize(data.size() * 2);
    const std::size_t got = reader.Read(data.data() + length, data.size() - length);
    length += got;
    if (length < data.size()) break;
  }
  data.resize(length);
  return data;
}

}  // namespace fedsgd
