// The int8 tensor frame (QSGD-style, Alistarh et al. 2017): ceil(count /
// block) little-endian float32 scales, then `count` int8 values q in
// -127..127; value i decodes to q_i * scale_b / 127 with b = i / block (see
// tensor_frames.h). A scale is the block's largest |x|: finite and >= 0.
#include <algorithm>
#include <cmath>
#include <string>

#include "tensor_frames.h"

namespace fedsgd::wire::tensor_frames {
namespace {

std::uint64_t Blocks(std::uint64_t count, std::uint32_t block) {
  return count / block + (count % block != 0);
}

// A uniform float in [0, 1) from 24 random bits: cheaper than
// std::uniform_real_distribution, and the same on every standard library.
float Uniform(std::mt19937_64& rng) {
  return static_cast<float>(rng() >> 40) * 5.9604644775390625e-8f;
}

}  // namespace

std::vector<std::uint8_t> EncodeInt8(std::span<const float> values, std::uint32_t block,
                                     std::mt19937_64& rng) {
  const std::uint64_t blocks = Blocks(values.size(), block);
  std::vector<std::uint8_t> bytes(blocks * sizeof(float) + values.size());
  unsigned char* scales = bytes.data();
  auto* quantised = reinterpret_cast<std::int8_t*>(bytes.data() + blocks * sizeof(float));
  for (std::uint64_t b = 0; b < blocks; ++b) {
    const std::size_t begin = b * block;
    const std::size_t end = std::min<std::size_t>(begin + block, values.size());
    float scale = 0;
    for (std::size_t i = begin; i < end; ++i) scale = std::max(scale, std::fabs(values[i]));
    StoreLe32(scales + b * sizeof(float), std::bit_cast<std::uint32_t>(scale));
    const float to_levels = scale > 0 ? 127.0f / scale : 0.0f;
    for (std::size_t i = begin; i < end; ++i) {
      // Stochastic rounding: up with probability equal to the fraction, so
      // the expected decoded value is exactly x.
      const float level = std::floor(values[i] * to_levels + Uniform(rng));
      quantised[i] = static_cast<std::int8_t>(std::clamp(level, -127.0f, 127.0f));
    }
  }
  return bytes;
}

std::optional<DecodeError> DecodeInt8(const zmq::message_t& frame, std::uint64_t count,
                                      std::uint32_t block, std::vector<float>& out) {
  const std::uint64_t blocks = Blocks(count, block);
  const std::uint64_t expected = blocks * sizeof(float) + count;
  if (frame.size() != expected) {
    return DecodeError{RejectReason::kWrongSize,
                       "int8 frame of " + std::to_string(frame.size()) + " bytes, " +
                           std::to_string(count) + " values in blocks of " + std::to_string(block) +
                           " need " + std::to_string(expected)};
  }
  const auto* in = static_cast<const unsigned char*>(frame.data());
  const auto* quantised = reinterpret_cast<const std::int8_t*>(in + blocks * sizeof(float));
  out.resize(count);
  for (std::uint64_t b = 0; b < blocks; ++b) {
    const float scale = std::bit_cast<float>(LoadLe32(in + b * sizeof(float)));
    if (!std::isfinite(scale)) {
      return DecodeError{RejectReason::kNonFinite,
                         "int8 scale " + std::to_string(b) + " is not finite"};
    }
    if (scale < 0) {
      return DecodeError{RejectReason::kBadField,
                         "int8 scale " + std::to_string(b) + " is negative"};
    }
    const float step = scale / 127.0f;
    const std::size_t begin = b * block;
    const std::size_t end = std::min<std::size_t>(begin + block, count);
    // Integer OR-reduction and plain pointers, so that the loop vectorises.
    std::uint32_t minimum = 0;  // -128 is outside the symmetric range
    float* values = out.data();
    for (std::size_t i = begin; i < end; ++i) {
      minimum |= static_cast<std::uint32_t>(quantised[i] == -128);
      values[i] = static_cast<float>(quantised[i]) * step;
    }
    if (minimum) {
      return DecodeError{RejectReason::kBadField,
                         "int8 block " + std::to_string(b) + " holds -128, outside -127..127"};
    }
  }
  return std::nullopt;
}

}  // namespace fedsgd::wire::tensor_frames
