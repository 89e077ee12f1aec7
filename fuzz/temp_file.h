// TempFile: a file holding a fuzz input, for the decoders that read paths.
//
// The loaders (CSV, IDX, gzip) and CLI11's --config take file names, not
// bytes, and an in-memory entry point would bypass the code a user's file
// goes through. Each TempFile names a file in /dev/shm (tmpfs, when present)
// or the temp directory, unique to the process and the slot, rewritten on
// each Write and removed by the destructor. One fuzz process, one thread:
// libFuzzer calls its target from a single thread. Throws
// std::runtime_error when the file cannot be written (a full disk is not a
// finding).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace fedsgd::fuzz {

class TempFile {
 public:
  // `name` tells the slots of one target apart and carries the suffix the
  // loader looks for (e.g. "images-idx3-ubyte.gz").
  explicit TempFile(const std::string& name) {
    namespace fs = std::filesystem;
    const fs::path dir =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    path_ = (dir / ("fedsgd-fuzz-" + std::to_string(::getpid()) + "-" + name)).string();
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { std::remove(path_.c_str()); }

  const std::string& path() const { return path_; }

  void Write(std::string_view bytes) const {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot create " + path_);
    const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
    if (std::fclose(f) != 0 || !ok) throw std::runtime_error("cannot write " + path_);
  }

 private:
  std::string path_;
};

}  // namespace fedsgd::fuzz
