// KeyStore: the devices allowed to connect, read from --authorized-keys DIR.
//
// The directory holds one file per device, named `<device-id>.key`, with the
// device's Z85 public key (the file `fedsgd-daemon keygen` writes). A
// directory rather than one shared list so that enrolment and revocation are
// a file copy and a file removal: nobody edits a shared file, and a half
// written edit cannot lock the fleet out. Hidden files (".*") and editor
// backups ("*~") are ignored; any other entry that is not a valid
// `<device-id>.key` with one key is refused with a reason, and so is a key
// listed under two ids (its holder could speak as either).
//
// Thread-safety: Reload() and the readers may run on different threads (the
// ZAP handler reloads on SIGHUP, the coordinator's loop reads). Readers get
// an immutable snapshot (a shared_ptr) swapped under a mutex, so a reload
// never changes a set someone is looking at. Memory: about 150 bytes per
// device. Failure: Reload() throws fedsgd::Error only when the directory
// cannot be listed (the previous snapshot stays in force); bad entries are
// reported in the result, not thrown.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace fedsgd {

struct AuthorizedKeys {
  std::map<std::string, std::string> id_by_key;  // Z85 public key -> device id
  std::map<std::string, std::string> key_by_id;  // device id -> Z85 public key
  std::vector<std::string> problems;             // refused entries, one sentence each
  std::uint64_t generation = 0;                  // 1 for the first load, +1 per reload

  bool Authorized(const std::string& device_id) const { return key_by_id.contains(device_id); }
};

// Parses a directory into an AuthorizedKeys (generation 0). Throws
// fedsgd::Error when `dir` is not a readable directory.
AuthorizedKeys ReadAuthorizedKeys(const std::string& dir);

class KeyStore {
 public:
  // Loads `dir` once (throws fedsgd::Error as ReadAuthorizedKeys).
  explicit KeyStore(std::string dir);

  // Re-reads the directory and swaps the snapshot in. Returns the new one.
  std::shared_ptr<const AuthorizedKeys> Reload();
  std::shared_ptr<const AuthorizedKeys> Snapshot() const;
  const std::string& dir() const { return dir_; }

 private:
  const std::string dir_;
  mutable std::mutex mutex_;
  std::shared_ptr<const AuthorizedKeys> current_;
};

}  // namespace fedsgd
