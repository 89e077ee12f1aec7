// SecureGaussian (see secure_gaussian.h).
#include "secure_gaussian.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <cmath>
#include <string>

#include "fedsgd/error.h"

namespace fedsgd {

SecureGaussian::~SecureGaussian() {
  OPENSSL_cleanse(buffer_.data(), sizeof buffer_);
  OPENSSL_cleanse(&spare_, sizeof spare_);
}

std::uint64_t SecureGaussian::NextWord() {
  if (used_ == kWords) {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(buffer_.data()),
                   static_cast<int>(sizeof buffer_)) != 1) {
      char reason[256];
      ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
      throw Error(std::string("differential privacy: OpenSSL could not produce random bytes for "
                              "the noise (") +
                  reason + "); is the system's entropy source available?");
    }
    used_ = 0;
  }
  return buffer_[used_++];
}

double SecureGaussian::Uniform() {
  // The top 53 bits as k / 2^53, shifted by half a step: never 0, never 1.
  const std::uint64_t k = NextWord() >> 11;
  return (static_cast<double>(k) + 0.5) * 0x1.0p-53;
}

double SecureGaussian::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Marsaglia and Bray 1964: a uniform point in the unit disc (rejecting the
  // 21% outside) gives two independent normals without sin/cos.
  double u = 0, v = 0, s = 0;
  do {
    u = 2 * Uniform() - 1;
    v = 2 * Uniform() - 1;
    s = u * u + v * v;
  } while (s >= 1 || s == 0);
  const double factor = std::sqrt(-2 * std::log(s) / s);
  spare_ = v * factor;
  has_spare_ = true;
  return u * factor;
}

void SecureGaussian::AddNoise(std::span<float> out, double stddev) {
  for (float& x : out) x = static_cast<float>(static_cast<double>(x) + stddev * Next());
}

}  // namespace fedsgd
