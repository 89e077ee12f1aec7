// UpdateCompressor: the daemon's side of the plan's update codec
// (update_codec.h). It compresses each update before it is sent and, for
// topk, keeps ERROR FEEDBACK (Stich et al. 2018, "Sparsified SGD with
// memory"; Lin et al. 2018, "Deep Gradient Compression"): the entries not
// sent are kept as a residual and added to the next update, so every
// coordinate's contribution arrives eventually instead of being lost.
//
// When the residual is reset: whenever Prepare is called with a different
// run id, codec or parameter count than before, i.e. when the device joins
// a new run (a --new-run coordinator, or one restarted on another database)
// or the plan changes. It survives a reconnect to the same run, including
// a coordinator restarted on the same database: the residual is what this
// device trained and has not delivered yet, still valid for that run's
// model. It is NOT reset when an update it was counted for is lost (a
// round that closed before the update arrived, or a coordinator that died
// before committing): the residual then misses what that update carried,
// which costs at most one update's top-k share; telling lost from applied
// updates would need an acknowledgement per round that the protocol does
// not have.
//
// int8's stochastic rounding draws from this object's own RNG (seeded per
// device), never from the training RNG, so fp32 training is unchanged.
//
// Thread-safety: none; owned and used by the DeviceClient's loop thread.
// Memory: the residual, 4 x P bytes, only with topk, and as much again
// while Compress runs.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "fedsgd/update_codec.h"

namespace fedsgd {

class UpdateCompressor {
 public:
  explicit UpdateCompressor(std::uint64_t seed) : rng_(seed) {}

  // Sets the codec of `run_id` for updates of `params` values; resets the
  // residual unless run, codec and size are those of the previous call.
  void Prepare(const std::string& run_id, const wire::UpdateCodec& codec, std::size_t params);

  // Whether updates are compressed at all (the codec is not fp32).
  bool active() const { return codec_.encoding != wire::TensorEncoding::kFp32; }

  // Compresses `update` (P finite values) with the codec. With topk the
  // residual is added first and what is not sent becomes the new residual.
  wire::EncodedTensor Compress(std::span<const float> update);

  // topk: what has not been sent yet (empty for the other codecs).
  const std::vector<float>& residual() const { return residual_; }

 private:
  std::mt19937_64 rng_;
  std::string run_id_;
  wire::UpdateCodec codec_;
  std::string codec_text_;
  std::size_t params_ = 0;
  std::vector<float> residual_;
};

}  // namespace fedsgd
