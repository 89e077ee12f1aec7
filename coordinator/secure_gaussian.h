// SecureGaussian: standard normal samples from a cryptographically secure
// random source, for the noise of differential privacy.
//
// Why not the training RNG: a DP guarantee assumes the noise cannot be
// predicted. A seeded std::mt19937 (or any generator whose state can be
// recovered from its outputs) lets whoever learns the seed subtract the
// noise again. The bytes come from OpenSSL's RAND_bytes (a CSPRNG seeded from
// the operating system), drawn 4 KiB at a time so a model-sized noise vector
// does not cost a call per number; 53 bits make a uniform double in (0, 1),
// and Marsaglia's polar method turns pairs of them into two normals.
// (Floating-point samples are not the "discrete Gaussian" of Canonne, Kamath
// and Steinke 2020: the tiny leak Mironov 2012 showed for floating-point
// Laplace noise is not addressed here; see docs/aggregation.md.)
//
// Not thread-safe: one thread uses an instance (the round thread). Memory: a
// 4 KiB buffer. Throws fedsgd::Error when OpenSSL cannot produce random bytes
// (an unseeded entropy pool), never returns predictable numbers instead.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace fedsgd {

class SecureGaussian {
 public:
  SecureGaussian() = default;
  SecureGaussian(const SecureGaussian&) = delete;
  SecureGaussian& operator=(const SecureGaussian&) = delete;
  ~SecureGaussian();  // wipes the unused random bytes

  // One sample of N(0, 1).
  double Next();
  // Adds stddev x N(0, 1) to every element of out.
  void AddNoise(std::span<float> out, double stddev);
  // A uniform double in the open interval (0, 1), from 53 random bits.
  double Uniform();

 private:
  std::uint64_t NextWord();

  static constexpr std::size_t kWords = 512;  // 4 KiB per RAND_bytes call
  std::array<std::uint64_t, kWords> buffer_{};
  std::size_t used_ = kWords;  // all used: the first call fills the buffer
  double spare_ = 0;           // the polar method makes normals in pairs
  bool has_spare_ = false;
};

}  // namespace fedsgd
