// Reading data files, plain or gzip: whole (ReadWholeFile) or as a stream
// (GzipReader).
//
// Internal to libfedsgd (the IDX and CSV loaders share it). zlib's gz*
// functions read plain files transparently, so .gz and uncompressed inputs
// take one path and the loaders never look at file names to decide.
// A GzipReader is used by one thread; it holds zlib's state and a 128 KiB
// buffer.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

struct gzFile_s;

namespace fedsgd {

// The bytes of `path`, gunzipped if it is a gzip file. Throws fedsgd::Error
// naming the file when it is missing, a directory, unreadable, or a gzip
// stream that is truncated or corrupt.
std::string ReadWholeFile(const std::string& path);

// The bytes of `path` (gunzipped if it is gzip), front to back. Opening and
// reading throw fedsgd::Error as ReadWholeFile does.
class GzipReader {
 public:
  explicit GzipReader(const std::string& path);
  ~GzipReader();
  GzipReader(const GzipReader&) = delete;
  GzipReader& operator=(const GzipReader&) = delete;

  // Reads up to n bytes into out; fewer only at the end of the data.
  std::size_t Read(void* out, std::size_t n);
  // Reads and discards up to n bytes (all that is left by default);
  // returns how many there were.
  std::size_t Skip(std::size_t n = static_cast<std::size_t>(-1));
  // No more bytes than this can come out of the file: its size when plain,
  // the most deflate can expand it to when gzip. For refusing a header's
  // promise before allocating for it.
  std::size_t UpperBound() const;
  const std::string& path() const { return path_; }

 private:
  struct Close {
    void operator()(gzFile_s* f) const;
  };
  std::string path_;
  std::unique_ptr<gzFile_s, Close> file_;
};

}  // namespace fedsgd
