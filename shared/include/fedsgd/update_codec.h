// Update codecs: how an update's tensor travels from a daemon to the
// coordinator (docs/protocol.md "Tensor encodings"), chosen by the plan's
// update_codec (--update-codec) and applied by the daemon before it sends.
//
//   fp32        raw float32, 4 bytes a parameter (the protocol's default).
//   fp16        IEEE 754 binary16, round to nearest even, saturated at
//               +-65504: 2 bytes a parameter.
//   int8        blocks of kInt8BlockSize values share one float32 scale (the
//               block's largest |x|); each value is an int8 q in -127..127,
//               q = x / scale * 127 rounded stochastically (QSGD, Alistarh
//               et al. 2017), so the decoded value q * scale / 127 is an
//               unbiased estimate of x within one step (scale / 127) of it.
//   topk:F      the k = ceil(F * P) entries of largest magnitude
//               (0 < F <= 1): k, their float32 values, then their sorted
//               indices as LEB128 varint gaps (topk_frame.cpp), about 5
//               bytes an entry at F = 0.01; the daemon keeps what it did
//               not send and adds it to its next update (error feedback,
//               daemon/update_compressor.h).
//
// EncodeTensor only compresses; the wire (wire.h, Update::encoded) frames
// the result and Decode validates and expands it back to float32.
//
// Thread-safety: all functions are reentrant; the caller owns the RNG.
// Memory: EncodeTensor allocates the encoded bytes (and, for topk, an index
// array of P uint32). Failure: Parse throws fedsgd::Error naming the flag;
// EncodeTensor throws only std::bad_alloc.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedsgd::wire {

enum class TensorEncoding { kFp32, kFp16, kInt8, kTopK };

// "fp32", "fp16", "int8", "topk": the header's "encoding" on the wire.
std::string_view ToString(TensorEncoding encoding);

inline constexpr std::uint32_t kInt8BlockSize = 256;
// The largest int8 block a decoder accepts: bounds the header's "block".
inline constexpr std::uint32_t kMaxInt8Block = 1u << 16;

// The plan's update_codec.
struct UpdateCodec {
  TensorEncoding encoding = TensorEncoding::kFp32;
  double topk_fraction = 1;  // topk only: the share of entries sent, (0, 1]

  // "fp32", "fp16", "int8" or "topk:F" with 0 < F <= 1. Throws fedsgd::Error
  // naming --update-codec and the text.
  static UpdateCodec Parse(const std::string& text);
  // The text Parse reads back (topk's fraction in its shortest form).
  std::string ToString() const;
  // topk: how many of `params` entries are sent, ceil(F * P), at least 1
  // when params > 0.
  std::size_t TopKCount(std::size_t params) const;
};

// The largest topk frame of k entries: a uint32 count, k float32 values and
// k varints of at most 5 bytes. What a receiver's frame limit must allow.
constexpr std::size_t TopKFrameBytesAtMost(std::size_t k) { return 4 + 9 * k; }

// An update's tensor, compressed. On the wire: header fields "encoding",
// "count" (= count) and, for int8, "block"; then `bytes` as the tensor frame.
struct EncodedTensor {
  TensorEncoding encoding = TensorEncoding::kFp32;
  std::uint64_t count = 0;  // the dense length P the tensor decodes to
  std::uint32_t block = 0;  // int8: values per scale; 0 otherwise
  std::vector<std::uint8_t> bytes;
};

// Compresses `values` with `codec`. `rng` drives int8's stochastic rounding
// and nothing else. fp32 gives the raw little-endian floats.
// Precondition: every value is finite.
EncodedTensor EncodeTensor(const UpdateCodec& codec, std::span<const float> values,
                           std::mt19937_64& rng);

// binary16 <-> binary32 (IEEE 754). FloatToHalf rounds to nearest even and
// saturates finite values beyond +-65504 to +-65504 (never Inf).
std::uint16_t FloatToHalf(float value);
float HalfToFloat(std::uint16_t half);

}  // namespace fedsgd::wire
