// UpdateCompressor: codec and error feedback on the device (see
// update_compressor.h).
#include "update_compressor.h"

#include "fedsgd/wire.h"

namespace fedsgd {

void UpdateCompressor::Prepare(const std::string& run_id, const wire::UpdateCodec& codec,
                               std::size_t params) {
  const std::string text = codec.ToString();
  if (run_id == run_id_ && text == codec_text_ && params == params_) return;
  run_id_ = run_id;
  codec_ = codec;
  codec_text_ = text;
  params_ = params;
  residual_.assign(codec.encoding == wire::TensorEncoding::kTopK ? params : 0, 0.0f);
}

wire::EncodedTensor UpdateCompressor::Compress(std::span<const float> update) {
  if (codec_.encoding != wire::TensorEncoding::kTopK || residual_.size() != update.size()) {
    return wire::EncodeTensor(codec_, update, rng_);
  }
  for (std::size_t i = 0; i < update.size(); ++i) residual_[i] += update[i];
  wire::EncodedTensor encoded = wire::EncodeTensor(codec_, residual_, rng_);
  // What the frame delivers leaves the residual: topk's values are exact
  // copies, so the sent entries become 0 and the others stay as they are.
  // Only a residual grown past the float range (Inf) makes a frame the
  // decoder refuses; the coordinator refuses it too, and the residual
  // starts again from 0.
  std::vector<float> sent;
  if (wire::DecodeTensor(encoded, sent) || sent.size() != update.size()) {
    residual_.assign(update.size(), 0.0f);
    return encoded;
  }
  for (std::size_t i = 0; i < update.size(); ++i) residual_[i] -= sent[i];
  return encoded;
}

}  // namespace fedsgd
