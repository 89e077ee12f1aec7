// CURVE key pairs (ZeroMQ's CurveZMQ, RFC 26) as Z85 text files.
//
// A key pair lives in two files next to each other: `<prefix>.key` holds the
// public key and `<prefix>.key_secret` the secret key, each as one line of 40
// Z85 characters (lines starting with '#' are comments). Two files because
// the public one is copied around (to the coordinator's --authorized-keys
// directory, to every daemon) while the secret one never leaves its machine:
// it is written mode 0600 and refused at load when group or others may read
// or write it, as ssh does with its keys. Keys are made and derived by
// libzmq (zmq_curve_keypair / zmq_curve_public, libsodium underneath): no
// cryptography here.
//
// Free functions, callable from any thread; a key costs 40 bytes. Every
// failure (bad Z85, wrong length, unsafe permissions, an existing file that
// would be overwritten, a libzmq built without CURVE) is a fedsgd::Error
// naming the file and what to do.
#pragma once

#include <cstddef>
#include <string>

namespace fedsgd::curve {

// Length of a 32-byte CURVE key in Z85 text.
inline constexpr std::size_t kZ85KeyLength = 40;

struct KeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// True when libzmq was built with CURVE (Debian's is).
bool Available();
// A fresh key pair. Throws Error when libzmq has no CURVE.
KeyPair Generate();
// The public key of a Z85 secret key. Throws Error naming `what`.
std::string PublicFromSecret(const std::string& secret_z85, const std::string& what);
// Throws Error naming `what` unless `text` is a 40-character Z85 key.
void CheckZ85Key(const std::string& text, const std::string& what);

// `<prefix>.key` and `<prefix>.key_secret`.
std::string PublicPath(const std::string& prefix);
std::string SecretPath(const std::string& prefix);
// Writes both files (secret 0600, public 0644); refuses to overwrite either.
void WriteKeyPair(const std::string& prefix, const KeyPair& keys);
// Reads a secret key file (refused when group/others may read it) and
// derives its public key.
KeyPair LoadSecretKey(const std::string& path);
// Reads a public key file.
std::string LoadPublicKey(const std::string& path);
// The first 8 characters of a key: enough to tell keys apart in a log, not
// enough to be one.
std::string KeyFingerprint(const std::string& z85);

}  // namespace fedsgd::curve
