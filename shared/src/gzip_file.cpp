// ReadWholeFile: a file's bytes, plain or gzip, through zlib (see gzip_file.h).
#include "gzip_file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

struct GzClose {
  void operator()(gzFile f) const { gzclose(f); }
};

}  // namespace

std::string ReadWholeFile(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (status.type() == fs::file_type::not_found) throw Error(path + ": no such file");
  if (status.type() == fs::file_type::directory) {
    throw Error(path + ": is a directory, not a file");
  }
  errno = 0;
  std::unique_ptr<gzFile_s, GzClose> file(gzopen(path.c_str(), "rb"));
  if (!file) {
    throw Error(path + ": cannot open (" + (errno != 0 ? std::strerror(errno) : "out of memory") +
                ")");
  }
  gzbuffer(file.get(), 1 << 17);

  // Read straight into the string, growing it geometrically; the plain file
  // size is a good first guess (a gzip file grows, and the loop handles it).
  std::string data;
  const std::uintmax_t on_disk = fs::file_size(path, ec);
  data.resize(ec ? std::size_t{1} << 16 : std::max<std::size_t>(on_disk + 1, 1 << 16));
  std::size_t length = 0;
  for (;;) {
    if (length == data.size()) data.resize(data.size() * 2);
    const auto want = static_cast<unsigned>(std::min<std::size_t>(data.size() - length, INT_MAX));
    const int got = gzread(file.get(), data.data() + length, want);
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file.get(), &code);
      if (code == Z_ERRNO) message = std::strerror(errno);
      throw Error(path + ": cannot read (" + (message ? message : "unknown error") +
                  "; a corrupt gzip file?)");
    }
    if (got == 0) break;
    length += static_cast<std::size_t>(got);
  }
  // At a gzip stream cut short gzread just stops, returning what it had;
  // only gzerror tells (Z_BUF_ERROR, "unexpected end of file").
  int code = Z_OK;
  gzerror(file.get(), &code);
  if (code != Z_OK) throw Error(path + ": truncated or corrupt gzip data");
  data.resize(length);
  return data;
}

}  // namespace fedsgd
