// The limits every fedsgd ZeroMQ socket carries, set in one place so the
// coordinator (ROUTER, PUB) and the daemon (DEALER, SUB) agree
// (docs/security.md, "Limits under abuse"):
//   - ZMQ_MAXMSGSIZE: the largest *frame* the socket accepts; a peer that
//     sends a larger one is disconnected by libzmq before the frame is
//     buffered. (It bounds frames, not messages: the coordinator also bounds
//     the frame count itself, see wire::ReceiveBounded.)
//   - ZMQ_HANDSHAKE_IVL: a connection that has not finished the ZMTP
//     handshake in time is closed, so idle TCP connections cannot hold file
//     descriptors for ever.
//   - TCP keepalive (ZMQ_TCP_KEEPALIVE, _IDLE 30 s, _INTVL 5 s, _CNT 3):
//     the kernel closes the connection of a dead peer (a board that lost
//     power) after about 45 s of silence, so its descriptor is not held for
//     ever. ZMTP heartbeats (ZMQ_HEARTBEAT_IVL) would do the same but are
//     off by default: libzmq keeps their timers in one list per I/O thread
//     and cancels one by a linear search (poller_base_t::cancel_timer), so
//     with thousands of connections every ping costs a scan of them all and
//     the I/O thread stops keeping up (measured: 10,000 devices never all
//     joined). fedsgd's own heartbeats tell a silent device or coordinator.
//   - ZMQ_SNDHWM / ZMQ_RCVHWM when asked: messages queued per peer.
//
// Call ApplySocketLimits before bind/connect (libzmq reads most options when
// a connection starts). Thread-safety: as the socket (one thread). Throws
// zmq::error_t only for an option libzmq does not know (a build bug).
#pragma once

#include <cstddef>
#include <cstdint>
#include <zmq.hpp>

namespace fedsgd {

struct SocketLimits {
  std::int64_t max_frame_bytes = -1;  // ZMQ_MAXMSGSIZE; -1: no limit
  int handshake_ms = 10000;           // ZMQ_HANDSHAKE_IVL
  int heartbeat_interval_ms = 0;      // ZMQ_HEARTBEAT_IVL; 0: no ZMTP pings (see above)
  int heartbeat_timeout_ms = 30000;   // ZMQ_HEARTBEAT_TIMEOUT (and _TTL), with pings only
  int keepalive_idle_s = 30;          // ZMQ_TCP_KEEPALIVE_IDLE; 0: no TCP keepalive
  int keepalive_interval_s = 5;       // ZMQ_TCP_KEEPALIVE_INTVL
  int keepalive_count = 3;            // ZMQ_TCP_KEEPALIVE_CNT
  int send_hwm = -1;                  // ZMQ_SNDHWM in messages; -1: libzmq's default (1000)
  int receive_hwm = -1;               // ZMQ_RCVHWM in messages; -1: libzmq's default (1000)
};

// The largest legal frame of a model of `params` float32 parameters: the
// tensor, or a CBOR header (at most 64 KiB), whichever is larger, plus slack.
std::int64_t MaxFrameBytes(std::size_t params);

// Limits for a client's sockets (a daemon's, a gateway's link to its root)
// before the model's size is known: frames up to the largest tensor the wire
// protocol allows (wire::Limits::max_params).
SocketLimits ClientReceiveLimits();

void ApplySocketLimits(zmq::socket_t& socket, const SocketLimits& limits);

}  // namespace fedsgd
