// Broadcast codec: how the coordinator's weights travel to daemons, in the
// Welcome, every Model broadcast and every FetchModel reply; the plan's
// broadcast_codec (--broadcast-codec; docs/protocol.md "Tensor encodings").
//
//   fp32  raw float32, 4 bytes a parameter (the default).
//   fp16  IEEE 754 binary16 (the fp16 tensor frame of update_codec.h):
//         2 bytes a parameter. Devices then train from the fp16-rounded
//         model and send their delta against it; the coordinator keeps
//         float32 as the truth (in memory and in SQLite) and adds the mean
//         delta to it, so rounding never accumulates in the global model.
//
// Thread-safety: reentrant. Failure: ParseBroadcastCodec throws
// fedsgd::Error naming the flag; EncodeWeights throws only std::bad_alloc.
#pragma once

#include <span>
#include <string>

#include "fedsgd/update_codec.h"

namespace fedsgd::wire {

// "fp32" or "fp16". Throws fedsgd::Error naming --broadcast-codec and the
// text.
TensorEncoding ParseBroadcastCodec(const std::string& text);

// The weights as a Welcome's or Model's `encoded` (wire.h). fp32 gives an
// empty EncodedTensor, so Encode sends `params` as they are (zero-copy);
// fp16 the binary16 frame of `weights`, which may then be dropped from the
// message. Precondition: encoding is fp32 or fp16; every weight is finite.
EncodedTensor EncodeWeights(TensorEncoding encoding, std::span<const float> weights);

}  // namespace fedsgd::wire
