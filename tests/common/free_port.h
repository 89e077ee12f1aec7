// FreePort(): a loopback TCP port for a child process to bind, shared by the
// integration tests and the fleet_load benchmark (which start coordinators).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>

namespace fedsgd {

// A TCP port on 127.0.0.1 that was free a moment ago. It is taken below the
// kernel's ephemeral range (ip_local_port_range), so no outgoing connection of
// a test running beside this one can hold it by the time a child binds it, and
// one process never hands out the same port twice (a bind to port 0 may). The
// start is drawn from the pid and the clock, so parallel test processes begin
// at different places.
inline int FreePort() {
  static int next = -1;
  static int low = 1024, high = 32768;  // [low, high)
  if (next < 0) {
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
    int first = 0, last = 0;
    if (range >> first >> last && first > 2048) {
      high = first;
      low = std::max(1024, first - 16384);
    }
    const auto seed =
        static_cast<unsigned>(::getpid()) * 2654435761u ^
        static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count());
    next = low + static_cast<int>(seed % static_cast<unsigned>(high - low));
  }
  for (int tries = 0; tries < high - low; ++tries) {
    const int port = next;
    next = next + 1 < high ? next + 1 : low;
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    close(fd);
    if (free) return port;
  }
  return 0;  // no free port at all: the child's bind fails with the reason
}

}  // namespace fedsgd
