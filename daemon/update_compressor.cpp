// UpdateCompressor: codec and error feedback on the device (see
// update_compressor.h).
#include "update_compressor.h"

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
  // The frame starts with the k sent indices (little-endian uint32): those
  // entries are delivered, everything else stays in the residual.
  const std::size_t k = encoded.bytes.size() / 8;
  for (std::size_t j = 0; j < k; ++j) {
    const unsigned char* p = &encoded.bytes[4 * j];
    const std::uint32_t index = std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 |
                                std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
    residual_[index] = 0;
  }
  return encoded;
}

}  // namespace fedsgd
