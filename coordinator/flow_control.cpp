// Pace steering and upload slots (see flow_control.h).
#include "flow_control.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>

#include "fedsgd/wire.h"

namespace fedsgd {

double PaceJitter(std::string_view device) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const unsigned char c : device) h = (h ^ c) * 1099511628211ULL;
  return 0.9 + 0.2 * static_cast<double>(h % 1000) / 1000.0;
}

int IdleHeartbeatMs(int base_ms, std::size_t online, double max_rate, std::string_view device) {
  const double spread = static_cast<double>(online) * 1000.0 / std::max(max_rate, 1e-3);
  // Jitter only once steering applies: a small fleet keeps the base exactly.
  const double ms = spread > base_ms ? spread * PaceJitter(device) : base_ms;
  return static_cast<int>(std::clamp(ms, 10.0, static_cast<double>(wire::kMaxIntervalMs)));
}

int UploadRetryMs(std::size_t waiting, std::size_t slots, std::string_view device) {
  constexpr double kUploadsPerSlotPerSecond = 20;
  const double ms =
      1000.0 * static_cast<double>(waiting) /
      (static_cast<double>(std::max<std::size_t>(slots, 1)) * kUploadsPerSlotPerSecond);
  return static_cast<int>(std::clamp(ms * PaceJitter(device), 20.0, 5000.0));
}

bool UploadSlots::Grant(const std::string& device, double now, std::size_t wanted) {
  if (grants_.count(device)) return true;
  const std::size_t limit = std::min(slots_, wanted);
  if (grants_.size() >= limit) {
    std::erase_if(grants_, [&](const auto& g) { return now - g.second > timeout_; });
  }
  if (grants_.size() >= limit) {
    ++refused_;
    return false;
  }
  grants_.emplace(device, now);
  return true;
}

}  // namespace fedsgd
