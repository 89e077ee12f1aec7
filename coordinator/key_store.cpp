// The --authorized-keys directory (see key_store.h).
#include "key_store.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "fedsgd/curve_keys.h"
#include "fedsgd/error.h"
#include "fedsgd/wire.h"

namespace fedsgd {

AuthorizedKeys ReadAuthorizedKeys(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw Error("--authorized-keys " + dir +
                ": not a directory (it holds one <device-id>.key file per device)");
  }
  std::vector<fs::path> entries;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    entries.push_back(it->path());
  }
  if (ec) throw Error("--authorized-keys " + dir + ": cannot list it: " + ec.message());
  std::sort(entries.begin(), entries.end());

  AuthorizedKeys keys;
  std::map<std::string, std::vector<std::string>> ids_by_key;
  for (const fs::path& path : entries) {
    const std::string name = path.filename().string();
    if (name.starts_with(".") || name.ends_with("~")) continue;
    const auto refuse = [&](const std::string& why) {
      keys.problems.push_back(path.string() + ": " + why);
    };
    if (path.extension() != ".key") {
      refuse(name.ends_with(".key_secret")
                 ? "a secret key does not belong here (copy only the public <id>.key file)"
                 : "not a <device-id>.key file");
      continue;
    }
    const std::string id = path.stem().string();
    if (!wire::ValidDeviceId(id)) {
      refuse("'" + id + "' is not a device id (1-64 characters of A-Z a-z 0-9 . _ -)");
      continue;
    }
    if (!fs::is_regular_file(path, ec)) {
      refuse("not a regular file");
      continue;
    }
    try {
      ids_by_key[curve::LoadPublicKey(path.string())].push_back(id);
    } catch (const Error& e) {
      keys.problems.push_back(e.what());
    }
  }
  for (auto& [key, ids] : ids_by_key) {
    if (ids.size() > 1) {
      std::string list;
      for (const std::string& id : ids) list += (list.empty() ? "" : ", ") + id;
      keys.problems.push_back(dir + ": the key " + curve::KeyFingerprint(key) +
                              "... is listed for several devices (" + list +
                              "): refused for all of them; give each device its own key");
      continue;
    }
    keys.id_by_key[key] = ids.front();
    keys.key_by_id[ids.front()] = key;
  }
  return keys;
}

KeyStore::KeyStore(std::string dir) : dir_(std::move(dir)) {
  AuthorizedKeys keys = ReadAuthorizedKeys(dir_);
  keys.generation = 1;
  current_ = std::make_shared<const AuthorizedKeys>(std::move(keys));
}

std::shared_ptr<const AuthorizedKeys> KeyStore::Reload() {
  AuthorizedKeys keys = ReadAuthorizedKeys(dir_);  // outside the lock: file I/O
  std::lock_guard lock(mutex_);
  keys.generation = current_->generation + 1;
  current_ = std::make_shared<const AuthorizedKeys>(std::move(keys));
  return current_;
}

std::shared_ptr<const AuthorizedKeys> KeyStore::Snapshot() const {
  std::lock_guard lock(mutex_);
  return current_;
}

}  // namespace fedsgd
