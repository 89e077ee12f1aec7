// ServiceNotifier speaks systemd's notification protocol itself: one datagram
// per message to $NOTIFY_SOCKET (a path, or "@" for an abstract name), and
// the watchdog only when WATCHDOG_USEC is set for this process.
#include "fedsgd/service_notifier.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

namespace fedsgd {
namespace {

// Sets or clears an environment variable for one test, then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A datagram socket standing in for systemd's: bound to a path or, when the
// name starts with '@', to an abstract name.
class FakeServiceManager {
 public:
  explicit FakeServiceManager(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name.data(), name.size());
    if (name[0] == '@') address.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    bound_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0;
  }
  ~FakeServiceManager() {
    if (fd_ >= 0) ::close(fd_);
    if (name_[0] == '/') std::filesystem::remove(name_);
  }
  FakeServiceManager(const FakeServiceManager&) = delete;
  FakeServiceManager& operator=(const FakeServiceManager&) = delete;

  bool bound() const { return bound_; }
  // The next datagram, or nullopt if none arrives within 1 s.
  std::optional<std::string> Receive() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return std::nullopt;
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof(buffer), 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

std::string SocketPath() {
  return (std::filesystem::temp_directory_path() /
          ("fedsgd-notify-" + std::to_string(::getpid()) + ".sock"))
      .string();
}

TEST(ServiceNotifierTest, SendsEachMessageAsOneDatagramToTheSocketPath) {
  const std::string path = SocketPath();
  std::filesystem::remove(path);
  FakeServiceManager manager(path);
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", path.c_str());
  ServiceNotifier notifier;
  notifier.Ready();
  notifier.Status("round 3/10, 4 device(s)");
  notifier.Stopping();
  EXPECT_EQ(manager.Receive(), "READY=1");
  EXPECT_EQ(manager.Receive(), "STATUS=round 3/10, 4 device(s)");
  EXPECT_EQ(manager.Receive(), "STOPPING=1");
}

TEST(ServiceNotifierTest, ReachesAnAbstractSocket) {
  const std::string name = "@fedsgd-notify-test-" + std::to_string(::getpid());
  FakeServiceManager manager(name);
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", name.c_str());
  EXPECT_TRUE(NotifyServiceManager("READY=1"));
  EXPECT_EQ(manager.Receive(), "READY=1");
}

TEST(ServiceNotifierTest, DoesNothingOutsideSystemdOrWithABadSocketName) {
  {
    ScopedEnv socket("NOTIFY_SOCKET", nullptr);
    EXPECT_FALSE(NotifyServiceManager("READY=1"));
    ServiceNotifier notifier;  // and nothing throws or blocks
    notifier.Ready();
    notifier.Watchdog();
  }
  for (const char* bad : {"", "@", "relative/path", "vsock:2:1234", "/nonexistent/dir/notify"}) {
    ScopedEnv socket("NOTIFY_SOCKET", bad);
    EXPECT_FALSE(NotifyServiceManager("READY=1")) << bad;
  }
  const std::string too_long = "/" + std::string(200, 'x');
  ScopedEnv socket("NOTIFY_SOCKET", too_long.c_str());
  EXPECT_FALSE(NotifyServiceManager("READY=1"));
}

TEST(ServiceNotifierTest, PingsTheWatchdogOnlyWhenItIsThisProcesssAndAtMostEverySecond) {
  const std::string path = SocketPath();
  std::filesystem::remove(path);
  FakeServiceManager manager(path);
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", path.c_str());
  const std::string me = std::to_string(::getpid());
  {
    ScopedEnv usec("WATCHDOG_USEC", nullptr);
    ScopedEnv pid("WATCHDOG_PID", nullptr);
    EXPECT_FALSE(ServiceNotifier().watchdog());
  }
  for (const char* bad : {"0", "", "ten", "5000000x", "-1"}) {
    ScopedEnv usec("WATCHDOG_USEC", bad);
    EXPECT_FALSE(ServiceNotifier().watchdog()) << bad;
  }
  {
    ScopedEnv usec("WATCHDOG_USEC", "5000000");
    ScopedEnv pid("WATCHDOG_PID", "1");  // a parent's watchdog, not ours
    EXPECT_FALSE(ServiceNotifier().watchdog());
  }
  ScopedEnv usec("WATCHDOG_USEC", "5000000");
  ScopedEnv pid("WATCHDOG_PID", me.c_str());
  ServiceNotifier notifier;
  ASSERT_TRUE(notifier.watchdog());
  notifier.Watchdog();
  notifier.Watchdog();  // within the second: not sent
  notifier.Ready();
  EXPECT_EQ(manager.Receive(), "WATCHDOG=1");
  EXPECT_EQ(manager.Receive(), "READY=1");
}

}  // namespace
}  // namespace fedsgd
