// ServiceNotifier on libsystemd's sd_notify (see service_notifier.h).
#include "fedsgd/service_notifier.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>

namespace fedsgd {

ServiceNotifier::ServiceNotifier() {
  std::uint64_t usec = 0;
  watchdog_ = sd_watchdog_enabled(0, &usec) > 0;
}

void ServiceNotifier::Ready() { sd_notify(0, "READY=1"); }

void ServiceNotifier::Status(const std::string& status) {
  sd_notify(0, ("STATUS=" + status).c_str());
}

void ServiceNotifier::Watchdog() {
  if (!watchdog_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < std::chrono::seconds(1)) return;
  last_ping_ = now;
  sd_notify(0, "WATCHDOG=1");
}

void ServiceNotifier::Stopping() { sd_notify(0, "STOPPING=1"); }

const char* LogPriority(LogLevel level) {
  // systemd sets JOURNAL_STREAM when stderr is connected to the journal.
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  if (!journal) return "";
  switch (level) {
    case LogLevel::kError:
      return "<3>";
    case LogLevel::kWarning:
      return "<4>";
    case LogLevel::kInfo:
      return "<6>";
  }
  return "";
}

}  // namespace fedsgd
