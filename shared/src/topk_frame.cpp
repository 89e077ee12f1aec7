// The topk tensor frame (sparsified SGD, Stich et al. 2018; Lin et al.
// 2018), all little-endian:
//
//   uint32 k             entries sent, 0..count
//   k float32 values     value j belongs to index j
//   k LEB128 varints     index 0, then gap j = index j - index j-1 >= 1
//
// Every other entry decodes to 0. A varint carries 7 bits a byte, low bits
// first, the top bit set on every byte but its last; at most 5 bytes (an
// index or gap below 2^32) and in its shortest form. Sorted indices make
// the gaps small: at topk:0.01 most take one byte, so an entry costs about
// 5 bytes instead of 8 (uint32 index + float32 value). The values come
// first so they stay 4-byte aligned in the frame. See tensor_frames.h.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "tensor_frames.h"

namespace fedsgd::wire::tensor_frames {
namespace {

constexpr std::size_t kMaxVarintBytes = 5;

std::size_t VarintBytes(std::uint32_t v) {
  std::size_t n = 1;
  while (v >= 0x80u) v >>= 7, ++n;
  return n;
}

unsigned char* StoreVarint(unsigned char* p, std::uint32_t v) {
  while (v >= 0x80u) {
    *p++ = static_cast<unsigned char>(v | 0x80u);
    v >>= 7;
  }
  *p++ = static_cast<unsigned char>(v);
  return p;
}

enum class VarintStatus { kOk, kTruncated, kTooLong, kNotShortest };

// Reads one varint at p (before end) into v, advancing p.
VarintStatus LoadVarint(const unsigned char*& p, const unsigned char* end, std::uint32_t& v) {
  if (p < end && *p < 0x80u) {  // the common case: one byte
    v = *p++;
    return VarintStatus::kOk;
  }
  std::uint32_t value = 0;
  for (std::size_t i = 0; i < kMaxVarintBytes; ++i) {
    if (p == end) return VarintStatus::kTruncated;
    const std::uint32_t byte = *p++;
    if (i == kMaxVarintBytes - 1 && byte > 0x0fu) return VarintStatus::kTooLong;  // >= 2^32
    value |= (byte & 0x7fu) << (7 * i);
    if (byte < 0x80u) {
      if (byte == 0 && i > 0) return VarintStatus::kNotShortest;
      v = value;
      return VarintStatus::kOk;
    }
  }
  return VarintStatus::kTooLong;  // unreachable: the 5th byte is <= 0x0f
}

DecodeError Fail(RejectReason reason, std::string detail) {
  return DecodeError{reason, "topk frame: " + std::move(detail)};
}

}  // namespace

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
  std::size_t size = 4 + 4 * k;
  for (std::size_t j = 0; j < k; ++j) size += VarintBytes(j ? order[j] - order[j - 1] : order[0]);
  std::vector<std::uint8_t> bytes(size);
  StoreLe32(bytes.data(), static_cast<std::uint32_t>(k));
  unsigned char* gaps = bytes.data() + 4 + 4 * k;
  for (std::size_t j = 0; j < k; ++j) {
    StoreLe32(&bytes[4 + 4 * j], std::bit_cast<std::uint32_t>(values[order[j]]));
    gaps = StoreVarint(gaps, j ? order[j] - order[j - 1] : order[0]);
  }
  return bytes;
}

std::optional<DecodeError> DecodeTopK(const zmq::message_t& frame, std::uint64_t count,
                                      std::vector<float>& out) {
  const std::uint64_t size = frame.size();
  if (size < 4) {
    return Fail(RejectReason::kWrongSize,
                std::to_string(size) + " bytes, too short for its entry count");
  }
  const auto* in = static_cast<const unsigned char*>(frame.data());
  const std::uint64_t k = LoadLe32(in);
  if (k > count) {
    return Fail(RejectReason::kWrongSize,
                "holds " + std::to_string(k) + " entries for " + std::to_string(count) + " values");
  }
  // Each entry takes 4 bytes of value and 1 to 5 of varint.
  if (size < 4 + 5 * k || size > 4 + 9 * k) {
    return Fail(RejectReason::kWrongSize,
                std::to_string(size) + " bytes cannot hold " + std::to_string(k) + " entries (" +
                    std::to_string(4 + 5 * k) + ".." + std::to_string(4 + 9 * k) + " bytes)");
  }
  const unsigned char* values = in + 4;
  const unsigned char* p = values + 4 * k;
  const unsigned char* const end = in + size;
  out.assign(count, 0.0f);
  std::uint64_t index = 0;
  for (std::uint64_t j = 0; j < k; ++j) {
    std::uint32_t gap = 0;
    switch (LoadVarint(p, end, gap)) {
      case VarintStatus::kOk:
        break;
      case VarintStatus::kTruncated:
        return Fail(RejectReason::kWrongSize,
                    "ends inside the varint of index " + std::to_string(j));
      case VarintStatus::kTooLong:
        return Fail(RejectReason::kBadField,
                    "the varint of index " + std::to_string(j) + " exceeds 32 bits");
      case VarintStatus::kNotShortest:
        return Fail(RejectReason::kBadField,
                    "the varint of index " + std::to_string(j) + " is not in its shortest form");
    }
    if (j > 0 && gap == 0) {
      return Fail(RejectReason::kBadField,
                  "index " + std::to_string(j) + " is not above the one before");
    }
    index += gap;  // index < count (bounded by the limits), gap < 2^32: no overflow
    if (index >= count) {
      return Fail(RejectReason::kBadField, "index " + std::to_string(j) + " (" +
                                               std::to_string(index) + ") is out of range");
    }
    const float v = std::bit_cast<float>(LoadLe32(values + 4 * j));
    if (!std::isfinite(v)) {
      return Fail(RejectReason::kNonFinite, "value " + std::to_string(j) + " is not finite");
    }
    out[index] = v;
  }
  if (p != end) {
    return Fail(RejectReason::kWrongSize, std::to_string(end - p) + " bytes after the last index");
  }
  return std::nullopt;
}

}  // namespace fedsgd::wire::tensor_frames
