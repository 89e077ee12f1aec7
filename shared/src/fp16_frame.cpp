// The fp16 tensor frame: `count` IEEE 754 binary16 values, little-endian,
// 2 bytes each (see tensor_frames.h). A half whose exponent bits are all
// ones (Inf, NaN) is refused as non_finite.
#include <cmath>
#include <string>

#include "tensor_frames.h"

namespace fedsgd::wire {

std::uint16_t FloatToHalf(float value) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(value);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  // Beyond the largest half (65504, or what rounds up past it): saturate,
  // so a finite update never becomes Inf on the wire.
  if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7bffu);
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal, in units of
    // 2^-24. The float's rounding of magnitude * 2^24 is to nearest even.
    const float scaled = std::bit_cast<float>(magnitude) * 16777216.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 23-bit mantissa
  // to 10 bits, to nearest even; a carry correctly bumps the exponent.
  const std::uint32_t rebiased = magnitude - 0x38000000u;
  const std::uint32_t round = 0xfffu + ((rebiased >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rebiased + round) >> 13));
}

float HalfToFloat(std::uint16_t half) {
  // Branch-free (integer masks, one int32 -> float conversion) so that the
  // decoding loop, which inlines it, vectorises: normals rebias the
  // exponent, subnormals (and zero) scale by 2^-24. Inf / NaN are refused
  // before a value is used.
  const std::uint32_t magnitude = half & 0x7fffu;
  const std::uint32_t normal = (magnitude << 13) + 0x38000000u;
  const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(
      static_cast<float>(static_cast<std::int32_t>(magnitude)) * 5.9604644775390625e-8f);
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(magnitude < 0x400u);
  return std::bit_cast<float>((subnormal & is_subnormal) | (normal & ~is_subnormal) | sign);
}

namespace tensor_frames {

std::vector<std::uint8_t> EncodeFp16(std::span<const float> values) {
  std::vector<std::uint8_t> bytes(values.size() * 2);
  for (std::size_t i = 0; i < values.size(); ++i) StoreLe16(&bytes[2 * i], FloatToHalf(values[i]));
  return bytes;
}

std::optional<DecodeError> DecodeFp16(const zmq::message_t& frame, std::uint64_t count,
                                      std::vector<float>& out) {
  if (frame.size() != count * 2) {
    return DecodeError{RejectReason::kWrongSize, "fp16 frame of " + std::to_string(frame.size()) +
                                                     " bytes, " + std::to_string(count) +
                                                     " values need " + std::to_string(count * 2)};
  }
  const auto* in = static_cast<const unsigned char*>(frame.data());
  out.resize(count);
  float* values = out.data();
  std::uint32_t non_finite = 0;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint16_t half;
    std::memcpy(&half, in + 2 * i, sizeof half);
    if constexpr (std::endian::native == std::endian::big) half = Swap16(half);
    non_finite |= static_cast<std::uint32_t>((half & 0x7c00u) == 0x7c00u);
    values[i] = HalfToFloat(half);
  }
  if (!non_finite) return std::nullopt;
  std::size_t at = 0;
  while ((in[2 * at + 1] & 0x7cu) != 0x7cu) ++at;
  return DecodeError{RejectReason::kNonFinite,
                     "fp16 tensor value " + std::to_string(at) + " is not finite"};
}

}  // namespace tensor_frames
}  // namespace fedsgd::wire
