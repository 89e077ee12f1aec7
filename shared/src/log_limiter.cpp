// LogLimiter (see log_limiter.h).
#include "fedsgd/log_limiter.h"

#include <cstdio>

namespace fedsgd {

LogLimiter::LogLimiter(std::size_t lines_per_interval, double interval_seconds)
    : lines_(lines_per_interval), interval_(interval_seconds) {}

bool LogLimiter::Allow(std::string_view key, double now) {
  auto it = windows_.find(key);
  if (it == windows_.end()) it = windows_.emplace(std::string(key), Window{now, 0, 0}).first;
  Window& w = it->second;
  // An interval that ended with nothing held back restarts here; one with
  // lines held back waits for TakeSuppressed, so its summary is not lost.
  if (now - w.start >= interval_ && w.held == 0) w = Window{now, 0, 0};
  if (w.written < lines_ && w.held == 0) {
    ++w.written;
    return true;
  }
  ++w.held;
  return false;
}

std::vector<LogLimiter::Suppressed> LogLimiter::TakeSuppressed(double now) {
  std::vector<Suppressed> out;
  for (auto& [key, w] : windows_) {
    if (w.held == 0 || now - w.start < interval_) continue;
    out.push_back({key, w.held});
    w = Window{now, 0, 0};
  }
  return out;
}

std::string LogLimiter::Summary(std::uint64_t count) const {
  char line[96];
  std::snprintf(line, sizeof line, "... and %llu more like this in the last %g s",
                static_cast<unsigned long long>(count), interval_);
  return line;
}

}  // namespace fedsgd
