// LogLimiter: at most N log lines per key (a reason, say "malformed") in an
// interval; the rest are counted and reported later as one summary line
// ("... and K more like this in the last 10 s"), so a flood of refused
// messages cannot flood the journal (journald drops lines under a burst,
// real ones included).
//
// Times are seconds on the caller's monotonic clock, passed in, so tests
// drive it with a fake one. Memory: one small entry per distinct key; keys
// are meant to come from a small fixed set (reject reasons, event names),
// never from peer input such as a device id.
//
// Not thread-safe: one thread (the one that writes the log) owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fedsgd {

class LogLimiter {
 public:
  // lines_per_interval >= 1, interval_seconds > 0.
  explicit LogLimiter(std::size_t lines_per_interval = 5, double interval_seconds = 10);

  // True when a line for `key` may be written now; false when it is held
  // back (and counted for the summary).
  bool Allow(std::string_view key, double now);

  struct Suppressed {
    std::string key;
    std::uint64_t count = 0;  // lines held back in the interval that ended
  };
  // The keys whose interval has ended with lines held back, with their
  // counts; each is reported once and its interval restarts. Call it often
  // (each loop turn): a summary is due even when the key falls silent.
  std::vector<Suppressed> TakeSuppressed(double now);

  // "... and K more like this in the last S s"
  std::string Summary(std::uint64_t count) const;

 private:
  struct Window {
    double start = 0;
    std::size_t written = 0;
    std::uint64_t held = 0;
  };
  std::size_t lines_;
  double interval_;
  std::map<std::string, Window, std::less<>> windows_;
};

}  // namespace fedsgd
