// Update codecs: parsing the plan's update_codec and compressing a tensor
// with it (see update_codec.h). The frame layouts are in *_frame.cpp.
#include "fedsgd/update_codec.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <system_error>

#include "fedsgd/error.h"
#include "tensor_frames.h"

namespace fedsgd::wire {

std::string_view ToString(TensorEncoding encoding) {
  switch (encoding) {
    case TensorEncoding::kFp16:
      return "fp16";
    case TensorEncoding::kInt8:
      return "int8";
    case TensorEncoding::kTopK:
      return "topk";
    case TensorEncoding::kFp32:
      break;
  }
  return "fp32";
}

UpdateCodec UpdateCodec::Parse(const std::string& text) {
  UpdateCodec codec;
  if (text == "fp32") return codec;
  if (text == "fp16" || text == "int8") {
    codec.encoding = text == "fp16" ? TensorEncoding::kFp16 : TensorEncoding::kInt8;
    return codec;
  }
  if (text.starts_with("topk:")) {
    const char* first = text.data() + 5;
    const char* last = text.data() + text.size();
    double fraction = 0;
    const auto r = std::from_chars(first, last, fraction);
    if (r.ec == std::errc() && r.ptr == last && std::isfinite(fraction) && fraction > 0 &&
        fraction <= 1) {
      codec.encoding = TensorEncoding::kTopK;
      codec.topk_fraction = fraction;
      return codec;
    }
  }
  throw Error("update_codec (--update-codec) '" + text +
              "' must be fp32, fp16, int8 or topk:FRACTION with 0 < FRACTION <= 1");
}

std::string UpdateCodec::ToString() const {
  if (encoding != TensorEncoding::kTopK) return std::string(wire::ToString(encoding));
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, topk_fraction);
  return "topk:" + std::string(buf, r.ptr);
}

std::size_t UpdateCodec::TopKCount(std::size_t params) const {
  if (params == 0) return 0;
  const double k = std::ceil(topk_fraction * static_cast<double>(params));
  return std::clamp<std::size_t>(static_cast<std::size_t>(k), 1, params);
}

EncodedTensor EncodeTensor(const UpdateCodec& codec, std::span<const float> values,
                           std::mt19937_64& rng) {
  EncodedTensor t;
  t.encoding = codec.encoding;
  t.count = values.size();
  switch (codec.encoding) {
    case TensorEncoding::kFp32:
      t.bytes.resize(values.size() * sizeof(float));
      for (std::size_t i = 0; i < values.size(); ++i) {
        tensor_frames::StoreLe32(&t.bytes[i * sizeof(float)],
                                 std::bit_cast<std::uint32_t>(values[i]));
      }
      break;
    case TensorEncoding::kFp16:
      t.bytes = tensor_frames::EncodeFp16(values);
      break;
    case TensorEncoding::kInt8:
      t.block = kInt8BlockSize;
      t.bytes = tensor_frames::EncodeInt8(values, t.block, rng);
      break;
    case TensorEncoding::kTopK:
      t.bytes = tensor_frames::EncodeTopK(values, codec.TopKCount(values.size()));
      break;
  }
  return t;
}

}  // namespace fedsgd::wire
