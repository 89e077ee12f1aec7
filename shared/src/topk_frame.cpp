// The topk tensor frame (sparsified SGD, Stich et al. 2018; Lin et al.
// 2018): k little-endian uint32 indices, strictly increasing and below
// `count`, then their k float32 values; every other entry decodes to 0. k
// is the frame's size / 8, at most count (see tensor_frames.h).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "tensor_frames.h"

namespace fedsgd::wire::tensor_frames {

std::vector<std::uint8_t> EncodeTopK(std::span<const float> values, std::size_t k) {
  k = std::min(k, values.size());
  std::vector<std::uint32_t> order(values.size());
  std::iota(order.begin(), order.end(), 0u);
  // Largest magnitude first; equal magnitudes by index, so the choice does
  // not depend on the standard library's nth_element.
  const auto larger = [&](std::uint32_t a, std::uint32_t b) {
    const float x = std::fabs(values[a]), y = std::fabs(values[b]);
    return x != y ? x > y : a < b;
  };
  std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                   larger);
  order.resize(k);
  std::sort(order.begin(), order.end());
  std::vector<std::uint8_t> bytes(k * 8);
  for (std::size_t j = 0; j < k; ++j) {
    StoreLe32(&bytes[4 * j], order[j]);
    StoreLe32(&bytes[4 * (k + j)], std::bit_cast<std::uint32_t>(values[order[j]]));
  }
  return bytes;
}

std::optional<DecodeError> DecodeTopK(const zmq::message_t& frame, std::uint64_t count,
                                      std::vector<float>& out) {
  if (frame.size() % 8 != 0) {
    return DecodeError{RejectReason::kWrongSize, "topk frame of " + std::to_string(frame.size()) +
                                                     " bytes is not whole (index, value) pairs"};
  }
  const std::uint64_t k = frame.size() / 8;
  if (k > count) {
    return DecodeError{RejectReason::kWrongSize, "topk frame holds " + std::to_string(k) +
                                                     " entries for " + std::to_string(count) +
                                                     " values"};
  }
  const auto* in = static_cast<const unsigned char*>(frame.data());
  const unsigned char* values = in + 4 * k;
  out.assign(count, 0.0f);
  std::uint64_t next = 0;  // the smallest index allowed next: sorted and unique
  for (std::uint64_t j = 0; j < k; ++j) {
    const std::uint32_t index = LoadLe32(in + 4 * j);
    if (index < next || index >= count) {
      return DecodeError{RejectReason::kBadField,
                         "topk index " + std::to_string(j) + " (" + std::to_string(index) +
                             ") is " +
                             (index >= count ? "out of range" : "not above the one before")};
    }
    next = std::uint64_t{index} + 1;
    const float v = std::bit_cast<float>(LoadLe32(values + 4 * j));
    if (!std::isfinite(v)) {
      return DecodeError{RejectReason::kNonFinite,
                         "topk value " + std::to_string(j) + " is not finite"};
    }
    out[index] = v;
  }
  return std::nullopt;
}

}  // namespace fedsgd::wire::tensor_frames
