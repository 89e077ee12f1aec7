// ConnectionMonitor: counts the ROUTER's connections that libzmq closed or
// refused: ZMQ_EVENT_DISCONNECTED (the peer left, or libzmq dropped it, e.g.
// for a frame over ZMQ_MAXMSGSIZE or a missed ZMTP heartbeat) and failed
// handshakes (ZMQ_HANDSHAKE_IVL expired, a protocol or authentication
// error). libzmq drops such frames without telling the application; this is
// how they show up in /v1/status and /metrics (`connections_dropped`).
//
// Uses zmq_socket_monitor on an inproc endpoint and a PAIR socket read with
// Poll() by the thread that uses the monitored socket; like that socket, it
// is used by one thread at a time (CoordinatorServer creates it in Start and
// hands it to the loop in Run, as it does its sockets). Memory: the events
// not read yet, without a limit (a bounded queue would block libzmq's I/O
// thread when full; ~100 bytes an event). Throws zmq::error_t if the monitor
// cannot be set up (a bug: the endpoint is unique per socket).
#pragma once

#include <cstdint>
#include <string>
#include <zmq.hpp>

namespace fedsgd {

class ConnectionMonitor {
 public:
  // `name` makes the inproc endpoint unique within the context.
  ConnectionMonitor(zmq::context_t& context, zmq::socket_t& monitored, const std::string& name);
  ~ConnectionMonitor();
  ConnectionMonitor(const ConnectionMonitor&) = delete;
  ConnectionMonitor& operator=(const ConnectionMonitor&) = delete;

  // Reads the events waiting, without blocking; returns how many were drops.
  std::uint64_t Poll();

  std::uint64_t disconnected() const { return disconnected_; }
  std::uint64_t handshakes_failed() const { return handshakes_failed_; }
  std::uint64_t dropped() const { return disconnected_ + handshakes_failed_; }

 private:
  zmq::socket_t& monitored_;
  zmq::socket_t pair_;
  std::uint64_t disconnected_ = 0;
  std::uint64_t handshakes_failed_ = 0;
};

}  // namespace fedsgd
