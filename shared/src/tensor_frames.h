// The tensor frames of the wire protocol, one encoding per file: fp32 (the
// default, fp32_frame.cpp), fp16, int8 and topk (fp16_frame.cpp,
// int8_frame.cpp, topk_frame.cpp). Private to the library: wire.cpp frames
// and validates messages with them, update_codec.cpp and
// broadcast_codec.cpp compress with them.
//
// Every Decode* reads a peer's bytes: it checks the frame's size against the
// header's count first, never reads outside the frame, and refuses what is
// not a valid tensor with a DecodeError (wrong_size, bad_field, non_finite)
// before `out` is used. The caller has already bounded `count` by the
// Limits. Reentrant; `out` is resized to count. fp32 and fp16 also carry
// weights (Welcome, Model: broadcast_codec.h).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <span>
#include <vector>
#include <zmq.hpp>

#include "fedsgd/update_codec.h"
#include "fedsgd/wire.h"

namespace fedsgd::wire::tensor_frames {

static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4);
static_assert(std::endian::native == std::endian::little ||
              std::endian::native == std::endian::big);

// std::byteswap is C++23.
constexpr std::uint32_t Swap32(std::uint32_t x) {
  return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
}
constexpr std::uint16_t Swap16(std::uint16_t x) {
  return static_cast<std::uint16_t>((x >> 8) | (x << 8));
}

// Little-endian loads and stores through memcpy: a small zmq frame's data
// need not be aligned.
inline std::uint32_t LoadLe32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = Swap32(v);
  return v;
}
inline void StoreLe32(unsigned char* p, std::uint32_t v) {
  if constexpr (std::endian::native == std::endian::big) v = Swap32(v);
  std::memcpy(p, &v, sizeof v);
}
inline void StoreLe16(unsigned char* p, std::uint16_t v) {
  if constexpr (std::endian::native == std::endian::big) v = Swap16(v);
  std::memcpy(p, &v, sizeof v);
}

// fp32: the values as a frame (zero-copy on little-endian hosts).
zmq::message_t Fp32Frame(std::vector<float>&& values);
// fp32: the frame's floats; count is the frame's size / 4, checked against
// the limits here (the only encoding whose header carries no count).
std::optional<DecodeError> DecodeFp32(const zmq::message_t& frame, const Limits& limits,
                                      std::vector<float>& out);
// fp32 without a copy: the same checks as DecodeFp32, then `values` views
// the frame itself when its data is float-aligned on a little-endian host;
// otherwise DecodeFp32 into `storage` and `values` views that. `values` is
// empty after an error, and valid while the frame (or storage) is unchanged.
std::optional<DecodeError> ViewFp32(const zmq::message_t& frame, const Limits& limits,
                                    std::vector<float>& storage, std::span<const float>& values);
// The finite check shared by the decoders: nullopt, or non_finite naming the
// first NaN / Inf in `values`.
std::optional<DecodeError> CheckFinite(std::span<const float> values);

std::vector<std::uint8_t> EncodeFp16(std::span<const float> values);
std::optional<DecodeError> DecodeFp16(const zmq::message_t& frame, std::uint64_t count,
                                      std::vector<float>& out);

std::vector<std::uint8_t> EncodeInt8(std::span<const float> values, std::uint32_t block,
                                     std::mt19937_64& rng);
std::optional<DecodeError> DecodeInt8(const zmq::message_t& frame, std::uint64_t count,
                                      std::uint32_t block, std::vector<float>& out);

std::vector<std::uint8_t> EncodeTopK(std::span<const float> values, std::size_t k);
std::optional<DecodeError> DecodeTopK(const zmq::message_t& frame, std::uint64_t count,
                                      std::vector<float>& out);

}  // namespace fedsgd::wire::tensor_frames
