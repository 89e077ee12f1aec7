// Broadcast codec: parsing the plan's broadcast_codec and encoding weights
// with it (see broadcast_codec.h). The fp16 frame is in fp16_frame.cpp.
#include "fedsgd/broadcast_codec.h"

#include "fedsgd/error.h"
#include "tensor_frames.h"

namespace fedsgd::wire {

TensorEncoding ParseBroadcastCodec(const std::string& text) {
  if (text == "fp32") return TensorEncoding::kFp32;
  if (text == "fp16") return TensorEncoding::kFp16;
  throw Error("broadcast_codec (--broadcast-codec) '" + text + "' must be fp32 or fp16");
}

EncodedTensor EncodeWeights(TensorEncoding encoding, std::span<const float> weights) {
  EncodedTensor t;
  if (encoding != TensorEncoding::kFp16) return t;
  t.encoding = encoding;
  t.count = weights.size();
  t.bytes = tensor_frames::EncodeFp16(weights);
  return t;
}

}  // namespace fedsgd::wire
