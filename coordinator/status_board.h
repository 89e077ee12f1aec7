// StatusBoard: what the round loop shows the HTTP side.
//
// The loop publishes snapshots (status and devices as JSON, metrics as
// Prometheus text) whenever they change; HTTP handlers copy the latest one
// out under a short lock. Handlers never touch the loop's own state, so a
// slow or hostile HTTP client cannot stall a round.
//
// Thread-safe.
#pragma once

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace fedsgd {

class StatusBoard {
 public:
  // devices nullopt: the previous device list stays (a large fleet's list
  // is refreshed less often than the status).
  void Publish(nlohmann::json status, std::optional<nlohmann::json> devices, std::string metrics) {
    std::lock_guard lock(mutex_);
    status_ = std::move(status);
    if (devices) devices_ = std::move(*devices);
    metrics_ = std::move(metrics);
  }
  nlohmann::json status() const {
    std::lock_guard lock(mutex_);
    return status_;
  }
  nlohmann::json devices() const {
    std::lock_guard lock(mutex_);
    return devices_;
  }
  std::string metrics() const {
    std::lock_guard lock(mutex_);
    return metrics_;
  }

 private:
  mutable std::mutex mutex_;
  nlohmann::json status_ = nlohmann::json::object();
  nlohmann::json devices_ = nlohmann::json::array();
  std::string metrics_;
};

}  // namespace fedsgd
