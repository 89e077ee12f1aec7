// CURVE key files (see fedsgd/curve_keys.h).
#include "fedsgd/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include "fedsgd/error.h"

namespace fedsgd::curve {
namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

// The one non-comment line of a key file, trimmed.
std::string ReadKeyLine(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw Error(what + " " + path + ": cannot open (" + std::strerror(errno) + ")");
  std::string line, key;
  while (std::getline(in, line)) {
    const auto begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos || line[begin] == '#') continue;
    const auto end = line.find_last_not_of(" \t\r");
    if (!key.empty()) throw Error(what + " " + path + ": more than one key line");
    key = line.substr(begin, end - begin + 1);
  }
  if (key.empty()) throw Error(what + " " + path + ": no key in the file");
  CheckZ85Key(key, what + " " + path);
  return key;
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    throw Error("cannot create " + path + ": " + std::strerror(errno) +
                (errno == EEXIST ? " (remove it first: keys are never overwritten)" : ""));
  }
  // The umask may have taken bits away, never added: set exactly what we want.
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t done = 0;
  while (ok && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ::close(fd) == 0 && ok;
  if (!ok) throw Error("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace

bool Available() { return zmq_has("curve") != 0; }

KeyPair Generate() {
  std::array<char, kZ85KeyLength + 1> pub{}, sec{};
  if (!Available() || zmq_curve_keypair(pub.data(), sec.data()) != 0) {
    throw Error("this libzmq cannot make CURVE keys (built without libsodium/CURVE)");
  }
  return KeyPair{std::string(pub.data()), std::string(sec.data())};
}

void CheckZ85Key(const std::string& text, const std::string& what) {
  if (text.size() != kZ85KeyLength) {
    throw Error(what + ": a CURVE key is " + std::to_string(kZ85KeyLength) +
                " Z85 characters, this is " + std::to_string(text.size()));
  }
  const auto bad = text.find_first_not_of(kZ85Alphabet);
  if (bad != std::string::npos) {
    throw Error(what + ": character " + std::to_string(bad + 1) +
                " is not a Z85 character (is this a CURVE key made by keygen?)");
  }
}

std::string PublicFromSecret(const std::string& secret_z85, const std::string& what) {
  CheckZ85Key(secret_z85, what);
  std::array<char, kZ85KeyLength + 1> pub{};
  if (!Available() || zmq_curve_public(pub.data(), secret_z85.c_str()) != 0) {
    throw Error(what + ": cannot derive the public key (" + zmq_strerror(zmq_errno()) + ")");
  }
  return std::string(pub.data());
}

std::string PublicPath(const std::string& prefix) { return prefix + ".key"; }
std::string SecretPath(const std::string& prefix) { return prefix + ".key_secret"; }

void WriteKeyPair(const std::string& prefix, const KeyPair& keys) {
  CheckZ85Key(keys.public_key, "public key");
  CheckZ85Key(keys.secret_key, "secret key");
  const std::string pub = PublicPath(prefix), sec = SecretPath(prefix);
  // Check both first so that a refusal leaves nothing half-written.
  for (const std::string& path : {pub, sec}) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      throw Error(path + " exists: remove it first (keys are never overwritten)");
    }
  }
  WriteFile(sec,
            "# fedsgd CURVE secret key (Z85). Keep it on this machine, mode 0600.\n" +
                keys.secret_key + "\n",
            0600);
  WriteFile(pub,
            "# fedsgd CURVE public key (Z85). Copy it where it must be trusted.\n" +
                keys.public_key + "\n",
            0644);
}

KeyPair LoadSecretKey(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw Error("secret key " + path + ": " + std::strerror(errno) +
                " (make one with the keygen subcommand)");
  }
  if (!S_ISREG(st.st_mode)) throw Error("secret key " + path + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    std::ostringstream mode;
    mode << std::oct << (st.st_mode & 0777);
    throw Error("secret key " + path + " is accessible by group or others (mode 0" + mode.str() +
                "): run chmod 600 " + path);
  }
  KeyPair keys;
  keys.secret_key = ReadKeyLine(path, "secret key");
  keys.public_key = PublicFromSecret(keys.secret_key, "secret key " + path);
  return keys;
}

std::string LoadPublicKey(const std::string& path) { return ReadKeyLine(path, "public key"); }

std::string KeyFingerprint(const std::string& z85) { return z85.substr(0, 8); }

}  // namespace fedsgd::curve
