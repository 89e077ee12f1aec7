// SharedParams: one immutable copy of a model's weights that the daemon's
// parts hold at once (the newest global model in the DeviceClient, the
// training job that trains from it, the inference endpoint that answers
// with it) instead of a copy each: for mlp:784-128-10 each copy is 0.4 MiB
// of a daemon that should fit in 20.
#pragma once

#include <memory>
#include <vector>

namespace fedsgd {

using SharedParams = std::shared_ptr<const std::vector<float>>;

inline SharedParams ShareParams(std::vector<float> params) {
  return std::make_shared<const std::vector<float>>(std::move(params));
}

}  // namespace fedsgd
