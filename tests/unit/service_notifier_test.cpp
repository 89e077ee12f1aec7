// ServiceNotifier speaks systemd's notification protocol itself: one datagram
// per message to $NOTIFY_SOCKET (a path, or "@" for an abstract name), and
// the watchdog only when WATCHDOG_USEC is set for this process.
#include "fedsgd/service_notifier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "notify_sink.h"

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

using testing::NotifySink;

// A sink at a socket path of this process's own.
NotifySink PathSink() {
  return NotifySink((std::filesystem::temp_directory_path() /
                     ("fedsgd-notify-" + std::to_string(::getpid()) + ".sock"))
                        .string());
}

TEST(ServiceNotifierTest, SendsEachMessageAsOneDatagramToTheSocketPath) {
  NotifySink manager = PathSink();
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", manager.name().c_str());
  ServiceNotifier notifier;
  notifier.Ready();
  notifier.Status("round 3/10, 4 device(s)");
  notifier.Stopping();
  EXPECT_EQ(manager.Receive(), "READY=1");
  EXPECT_EQ(manager.Receive(), "STATUS=round 3/10, 4 device(s)");
  EXPECT_EQ(manager.Receive(), "STOPPING=1");
}

TEST(ServiceNotifierTest, ReachesAnAbstractSocket) {
  NotifySink manager("@fedsgd-notify-test-" + std::to_string(::getpid()));
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", manager.name().c_str());
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
  NotifySink manager = PathSink();
  ASSERT_TRUE(manager.bound());
  ScopedEnv socket("NOTIFY_SOCKET", manager.name().c_str());
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
