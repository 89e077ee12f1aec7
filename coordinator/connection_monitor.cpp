// ConnectionMonitor (see connection_monitor.h).
#include "connection_monitor.h"

#include <cstring>

namespace fedsgd {
namespace {

constexpr int kEvents = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;

}  // namespace

ConnectionMonitor::ConnectionMonitor(zmq::context_t& context, zmq::socket_t& monitored,
                                     const std::string& name)
    : monitored_(monitored), pair_(context, zmq::socket_type::pair) {
  const std::string endpoint = "inproc://fedsgd-monitor-" + name;
  if (zmq_socket_monitor(monitored_.handle(), endpoint.c_str(), kEvents) != 0) {
    throw zmq::error_t();
  }
  pair_.set(zmq::sockopt::linger, 0);
  // libzmq's I/O thread sends each event with a blocking send: were the
  // queue bounded, events left unread (a long commit, the linger after the
  // run while 10,000 devices leave) would stop that thread, and with it all
  // network I/O, and deadlock zmq_socket_monitor(NULL) in the destructor.
  // No limit on this side makes the inproc pipe unbounded (libzmq adds both
  // sides' marks, and 0 on either is none): memory instead, read away by
  // Poll every loop turn.
  pair_.set(zmq::sockopt::rcvhwm, 0);
  pair_.connect(endpoint);
}

ConnectionMonitor::~ConnectionMonitor() {
  // Stops the monitor before its PAIR peer goes away.
  zmq_socket_monitor(monitored_.handle(), nullptr, 0);
}

std::uint64_t ConnectionMonitor::Poll() {
  std::uint64_t drops = 0;
  for (;;) {
    // An event is two frames: 6 bytes (uint16 event, uint32 value), then
    // the peer's endpoint.
    zmq::message_t event, address;
    try {
      if (!pair_.recv(event, zmq::recv_flags::dontwait)) break;
      if (event.more()) (void)pair_.recv(address, zmq::recv_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) break;
      throw;
    }
    if (event.size() < sizeof(std::uint16_t)) continue;
    std::uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    if (id == ZMQ_EVENT_DISCONNECTED) {
      ++disconnected_;
      ++drops;
    } else if (id & kEvents) {
      ++handshakes_failed_;
      ++drops;
    }
  }
  return drops;
}

}  // namespace fedsgd
