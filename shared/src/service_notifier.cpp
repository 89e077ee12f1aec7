// ServiceNotifier: systemd's notification protocol spoken directly (see
// service_notifier.h). The protocol is one datagram per message to the
// AF_UNIX socket named by $NOTIFY_SOCKET ("@..." an abstract name); it is
// under systemd's interface stability promise, and systemd's sd_notify(3)
// ("Notes", with its standalone example) recommends exactly this over linking
// libsystemd for it. Doing so keeps libsystemd and what it loads (libgcrypt,
// liblzma, libzstd, liblz4, libcap: ~1 MiB resident) out of both programs.
#include "fedsgd/service_notifier.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace fedsgd {
namespace {

// An unsigned decimal environment variable, or 0 if unset or not a number.
std::uint64_t EnvNumber(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr) return 0;
  const std::string_view s(text);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size()) return 0;
  return value;
}

}  // namespace

bool NotifyServiceManager(std::string_view message) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || message.empty()) return false;
  const std::size_t length = std::strlen(path);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // Only filesystem and abstract sockets; systemd's vsock form is for VMs.
  if (length < 2 || (path[0] != '/' && path[0] != '@') || length >= sizeof(address.sun_path)) {
    return false;
  }
  std::memcpy(address.sun_path, path, length);
  if (path[0] == '@') address.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const auto address_length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + length);
  ssize_t sent = 0;
  do {
    sent = ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&address), address_length);
  } while (sent < 0 && errno == EINTR);
  ::close(fd);
  return sent == static_cast<ssize_t>(message.size());
}

ServiceNotifier::ServiceNotifier() {
  // As sd_watchdog_enabled(): WATCHDOG_USEC set and positive, and
  // WATCHDOG_PID, if set, naming this process (not a parent's watchdog).
  const std::uint64_t pid = EnvNumber("WATCHDOG_PID");
  watchdog_ = EnvNumber("WATCHDOG_USEC") > 0 && (std::getenv("WATCHDOG_PID") == nullptr ||
                                                 pid == static_cast<std::uint64_t>(::getpid()));
}

void ServiceNotifier::Ready() { NotifyServiceManager("READY=1"); }

void ServiceNotifier::Status(const std::string& status) {
  NotifyServiceManager("STATUS=" + status);
}

void ServiceNotifier::Watchdog() {
  if (!watchdog_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < std::chrono::seconds(1)) return;
  last_ping_ = now;
  NotifyServiceManager("WATCHDOG=1");
}

void ServiceNotifier::Stopping() { NotifyServiceManager("STOPPING=1"); }

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
