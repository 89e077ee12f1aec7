// SavedModel (see saved_model.h).
#include "saved_model.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/npy.h"

namespace fedsgd {
namespace {

namespace fs = std::filesystem;

std::string SystemError(const std::string& what) { return what + ": " + std::strerror(errno); }

// Writes `bytes` to path atomically: a temporary file beside it, fsync,
// rename over it.
void WriteAtomically(const fs::path& path, const std::string& bytes) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(SystemError("cannot write " + tmp.string()));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string message = SystemError("cannot write " + tmp.string());
      ::close(fd);
      throw Error(message);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string message = SystemError("cannot sync " + tmp.string());
    ::close(fd);
    throw Error(message);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(SystemError("cannot rename " + tmp.string() + " to " + path.string()));
  }
}

void SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(SystemError("cannot open " + dir.string()));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Error(SystemError("cannot sync " + dir.string()));
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read " + path.string());
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

void SaveModel(const std::string& dir, const SavedModel& saved, const std::string& name) {
  const fs::path base(dir);
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec) throw Error("cannot create the state directory " + dir + ": " + ec.message());
  WriteAtomically(base / (name + ".npy"), EncodeNpy(saved.params));
  const nlohmann::json meta = {{"model", saved.model},
                               {"model_version", saved.model_version},
                               {"run_id", saved.run_id},
                               {"parameters", saved.params.size()}};
  WriteAtomically(base / (name + ".json"), meta.dump() + "\n");
  SyncDirectory(base);
}

std::optional<SavedModel> LoadSavedModel(const std::string& dir, const std::string& name) {
  const fs::path base(dir);
  const fs::path npy = base / (name + ".npy"), json = base / (name + ".json");
  if (!fs::exists(npy) && !fs::exists(json)) return std::nullopt;
  if (!fs::exists(json)) throw Error(json.string() + " is missing beside " + npy.string());
  if (!fs::exists(npy)) throw Error(npy.string() + " is missing beside " + json.string());
  SavedModel saved;
  const nlohmann::json meta = nlohmann::json::parse(ReadFile(json), nullptr, false);
  try {
    if (!meta.is_object()) throw Error("not a JSON object");
    saved.model = Architecture::Parse(meta.at("model").get<std::string>()).ToString();
    saved.model_version = meta.at("model_version").get<std::uint64_t>();
    saved.run_id = meta.at("run_id").get<std::string>();
  } catch (const std::exception& e) {
    throw Error(json.string() + " is not what fedsgd-daemon writes (" + e.what() + ")");
  }
  saved.params = DecodeNpy(ReadFile(npy), npy.string());
  const std::size_t expected = Architecture::Parse(saved.model).ParameterCount();
  if (saved.params.size() != expected) {
    throw Error(npy.string() + " holds " + std::to_string(saved.params.size()) +
                " parameters but " + json.string() + " says model " + saved.model + " (" +
                std::to_string(expected) +
                "): the pair is from two saves (a crash in between?); the daemon writes a new "
                "pair with the next model it receives");
  }
  return saved;
}

}  // namespace fedsgd
