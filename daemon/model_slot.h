// ModelSlot: the model the daemon's inference endpoint answers with, handed
// from the network thread (which learns of each new global model) to the
// inference thread without either waiting on the other for more than a
// pointer copy.
//
// A ServedModel is immutable once published: Publish swaps in a new one and
// readers that still hold the previous one keep using it until they let go
// (std::shared_ptr), so a batch is always answered by one whole model.
//
// Thread-safety: Publish and Current may be called from any threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fedsgd/model.h"
#include "shared_params.h"

namespace fedsgd {

struct ServedModel {
  Architecture arch;
  SharedParams params;  // arch.ParameterCount() floats
  std::string run_id;
  std::uint64_t model_version = 0;
  // Where it came from: "coordinator" (received while running) or
  // "state-dir" (the model saved before this start, until one arrives).
  std::string source;
};

class ModelSlot {
 public:
  // Replaces the served model; null clears it.
  void Publish(std::shared_ptr<const ServedModel> model) {
    std::lock_guard lock(mutex_);
    model_ = std::move(model);
  }
  // The newest published model, or null before the first.
  std::shared_ptr<const ServedModel> Current() const {
    std::lock_guard lock(mutex_);
    return model_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const ServedModel> model_;  // guarded by mutex_
};

}  // namespace fedsgd
