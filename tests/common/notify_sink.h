// Test helper: stands in for systemd's notification socket, the AF_UNIX
// datagram socket that $NOTIFY_SOCKET names (a path, or "@name" for an
// abstract one), and keeps what programs send to it. The unit tests of
// ServiceNotifier and the integration tests of the real binaries both use it.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

namespace fedsgd::testing {

class NotifySink {
 public:
  // A path is replaced if it exists and removed again at the end.
  explicit NotifySink(std::string name) : name_(std::move(name)) {
    sockaddr_un address{};
    if (name_.size() < 2 || name_.size() >= sizeof(address.sun_path)) return;
    if (name_[0] == '/') std::filesystem::remove(name_);
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, name_.data(), name_.size());
    if (name_[0] == '@') address.sun_path[0] = '\0';
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<const sockaddr*>(&address), length) == 0;
  }
  ~NotifySink() {
    if (fd_ >= 0) close(fd_);
    if (bound_ && name_[0] == '/') std::filesystem::remove(name_);
  }
  NotifySink(const NotifySink&) = delete;
  NotifySink& operator=(const NotifySink&) = delete;

  bool bound() const { return bound_; }
  const std::string& name() const { return name_; }

  // The next message, or nullopt if none arrives within `wait`.
  std::optional<std::string> Receive(std::chrono::milliseconds wait = std::chrono::seconds(1)) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(wait.count())) != 1) return std::nullopt;
    char buffer[4096];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    if (n < 0) return std::nullopt;
    return std::string(buffer, static_cast<std::size_t>(n));
  }

  // Every message received so far through Messages(), one per line.
  std::string Messages() {
    while (const auto message = Receive(std::chrono::milliseconds(0))) {
      messages_.append(*message).append("\n");
    }
    return messages_;
  }

 private:
  std::string name_, messages_;
  int fd_ = -1;
  bool bound_ = false;
};

}  // namespace fedsgd::testing
