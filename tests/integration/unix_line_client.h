// UnixLineClient: a blocking client of a line protocol on a Unix socket
// (the daemon's inference endpoint, docs/inference.md), for tests. A 60 s
// receive timeout turns a hang into a failed read, not a stuck test.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

namespace fedsgd::testing {

class UnixLineClient {
 public:
  explicit UnixLineClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    connected_ = ::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
    timeval timeout{60, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  }
  ~UnixLineClient() { ::close(fd_); }
  UnixLineClient(const UnixLineClient&) = delete;
  UnixLineClient& operator=(const UnixLineClient&) = delete;
  bool connected() const { return connected_; }
  bool Send(const std::string& text) {
    std::size_t sent = 0;
    while (sent < text.size()) {
      const ssize_t n = ::send(fd_, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
  void CloseInput() { ::shutdown(fd_, SHUT_WR); }
  // The next answer line, or "" when the server closed the connection.
  std::string Line() {
    while (true) {
      const std::size_t newline = buffer_.find('\n');
      if (newline != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        return line;
      }
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  nlohmann::json Json() { return nlohmann::json::parse(Line(), nullptr, false); }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buffer_;
};

}  // namespace fedsgd::testing
