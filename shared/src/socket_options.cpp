// Socket limits (see socket_options.h).
#include "fedsgd/socket_options.h"

#include <algorithm>

#include "fedsgd/wire.h"

namespace fedsgd {

std::int64_t MaxFrameBytes(std::size_t params) {
  constexpr std::int64_t kHeaderMax = 64 * 1024;
  const auto tensor = static_cast<std::int64_t>(params * sizeof(float));
  return std::max(tensor, kHeaderMax) + kHeaderMax;
}

SocketLimits ClientReceiveLimits() {
  SocketLimits limits;
  limits.max_frame_bytes = MaxFrameBytes(wire::Limits{}.max_params);
  return limits;
}

void ApplySocketLimits(zmq::socket_t& socket, const SocketLimits& limits) {
  socket.set(zmq::sockopt::maxmsgsize, limits.max_frame_bytes);
  socket.set(zmq::sockopt::handshake_ivl, limits.handshake_ms);
  socket.set(zmq::sockopt::heartbeat_ivl, limits.heartbeat_interval_ms);
  if (limits.heartbeat_interval_ms > 0) {
    socket.set(zmq::sockopt::heartbeat_timeout, limits.heartbeat_timeout_ms);
    socket.set(zmq::sockopt::heartbeat_ttl, limits.heartbeat_timeout_ms);
  }
  if (limits.keepalive_idle_s > 0) {
    socket.set(zmq::sockopt::tcp_keepalive, 1);
    socket.set(zmq::sockopt::tcp_keepalive_idle, limits.keepalive_idle_s);
    socket.set(zmq::sockopt::tcp_keepalive_intvl, limits.keepalive_interval_s);
    socket.set(zmq::sockopt::tcp_keepalive_cnt, limits.keepalive_count);
  }
  if (limits.send_hwm >= 0) socket.set(zmq::sockopt::sndhwm, limits.send_hwm);
  if (limits.receive_hwm >= 0) socket.set(zmq::sockopt::rcvhwm, limits.receive_hwm);
}

}  // namespace fedsgd
