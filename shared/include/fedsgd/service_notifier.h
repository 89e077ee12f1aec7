// ServiceNotifier: tells systemd how a fedsgd program is doing (the
// sd_notify(3) protocol, spoken directly: no libsystemd).
//
// Ready() once the program is serving (the coordinator listens; the daemon
// has joined), Status() for `systemctl status`, Watchdog() from the main
// loop: it pings at most every second, and only when the unit has
// WatchdogSec= set, so a hung loop gets the service restarted. Outside
// systemd (no NOTIFY_SOCKET) every call does nothing.
//
// LogPriority() gives the "<N>" prefix that the journal reads as a line's
// priority, or "" when stderr is not the journal.
//
// Not thread-safe: call from the main loop.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace fedsgd {

// Sends one message ("READY=1", ...) to $NOTIFY_SOCKET; false if there is
// none or it could not be sent. Exposed for the tests.
bool NotifyServiceManager(std::string_view message);

class ServiceNotifier {
 public:
  ServiceNotifier();
  bool watchdog() const { return watchdog_; }
  void Ready();
  void Status(const std::string& status);
  void Watchdog();
  void Stopping();

 private:
  bool watchdog_ = false;
  std::chrono::steady_clock::time_point last_ping_{};
};

enum class LogLevel { kError = 3, kWarning = 4, kInfo = 6 };
const char* LogPriority(LogLevel level);

}  // namespace fedsgd
