// The fp32 tensor frame: raw little-endian float32, the protocol's default
// (see tensor_frames.h).
#include <cmath>
#include <cstdint>
#include <string>

#include "tensor_frames.h"

namespace fedsgd::wire::tensor_frames {

zmq::message_t Fp32Frame(std::vector<float>&& values) {
  if (values.empty()) return zmq::message_t();
  if constexpr (std::endian::native == std::endian::little) {
    // Hand the buffer to zmq without a copy; zmq frees it once sent (from
    // its I/O thread, hence a free function rather than a capture).
    auto* owned = new std::vector<float>(std::move(values));
    return zmq::message_t(
        owned->data(), owned->size() * sizeof(float),
        [](void*, void* hint) { delete static_cast<std::vector<float>*>(hint); }, owned);
  } else {
    zmq::message_t frame(values.size() * sizeof(float));
    auto* out = static_cast<unsigned char*>(frame.data());
    for (std::size_t i = 0; i < values.size(); ++i) {
      StoreLe32(out + i * sizeof(float), std::bit_cast<std::uint32_t>(values[i]));
    }
    return frame;
  }
}

std::optional<DecodeError> CheckFinite(std::span<const float> values) {
  // NaN and Inf are the floats whose exponent bits are all ones. An integer
  // OR-reduction vectorises without -ffast-math (a float sum would not).
  std::uint32_t non_finite = 0;
  for (const float v : values) {
    non_finite |= (std::bit_cast<std::uint32_t>(v) & 0x7f800000u) == 0x7f800000u;
  }
  if (!non_finite) return std::nullopt;
  std::size_t at = 0;
  while (std::isfinite(values[at])) ++at;
  return DecodeError{RejectReason::kNonFinite,
                     "tensor value " + std::to_string(at) + " is not finite"};
}

namespace {

// The frame's size checked as a whole number of floats within the limits;
// the count, or why not.
std::optional<DecodeError> CheckFp32Size(const zmq::message_t& frame, const Limits& limits) {
  const std::size_t bytes = frame.size();
  if (bytes % sizeof(float) != 0) {
    return DecodeError{RejectReason::kWrongSize,
                       "tensor frame of " + std::to_string(bytes) + " bytes is not whole floats"};
  }
  const std::size_t count = bytes / sizeof(float);
  if (count > limits.max_params) {
    return DecodeError{RejectReason::kOversize, "tensor of " + std::to_string(count) +
                                                    " floats exceeds the limit of " +
                                                    std::to_string(limits.max_params)};
  }
  if (limits.expected_params != 0 && count != limits.expected_params) {
    return DecodeError{RejectReason::kWrongSize, "tensor has " + std::to_string(count) +
                                                     " floats, the model has " +
                                                     std::to_string(limits.expected_params)};
  }
  return std::nullopt;
}

}  // namespace

std::optional<DecodeError> DecodeFp32(const zmq::message_t& frame, const Limits& limits,
                                      std::vector<float>& out) {
  if (auto error = CheckFp32Size(frame, limits)) return error;
  const std::size_t bytes = frame.size();
  out.resize(bytes / sizeof(float));
  if (bytes > 0) std::memcpy(out.data(), frame.data(), bytes);
  if constexpr (std::endian::native != std::endian::little) {
    for (float& v : out) v = std::bit_cast<float>(Swap32(std::bit_cast<std::uint32_t>(v)));
  }
  return CheckFinite(out);
}

std::optional<DecodeError> ViewFp32(const zmq::message_t& frame, const Limits& limits,
                                    std::vector<float>& storage, std::span<const float>& values) {
  values = {};
  if (auto error = CheckFp32Size(frame, limits)) return error;
  const std::size_t count = frame.size() / sizeof(float);
  const void* data = frame.data();
  std::span<const float> view;
  if (std::endian::native == std::endian::little && count > 0 &&
      reinterpret_cast<std::uintptr_t>(data) % alignof(float) == 0) {
    view = {static_cast<const float*>(data), count};
  } else {
    // Unaligned or big-endian: one copy into the reused storage (DecodeFp32
    // reuses its capacity, so no allocation once it held this size).
    if (auto error = DecodeFp32(frame, limits, storage)) return error;
    values = storage;
    return std::nullopt;
  }
  if (auto error = CheckFinite(view)) return error;
  values = view;
  return std::nullopt;
}

}  // namespace fedsgd::wire::tensor_frames
