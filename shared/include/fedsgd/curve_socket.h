// Socket options for CURVE, and the loopback test that decides whether the
// keys are required.
//
// The coordinator's ROUTER and PUB are CURVE servers that ask the ZAP
// handler (coordinator/zap_handler.h) about each client; the daemon's DEALER
// and SUB are CURVE clients that know the coordinator's public key. Every
// one of the four sockets gets the same handshake timeout, so a peer that
// stalls the CURVE (or plain ZMTP) greeting is dropped rather than holding a
// connection. Call these before bind/connect, on the thread that owns the
// socket. They throw zmq::error_t only when libzmq refuses an option (a
// libzmq without CURVE); no memory beyond the socket's own.
#pragma once

#include <string>
#include <zmq.hpp>

#include "fedsgd/curve_keys.h"

namespace fedsgd::curve {

// The handshake timeout and the other limits every socket gets, with or
// without CURVE, are set by ApplySocketLimits (fedsgd/socket_options.h).
// A CURVE server authenticated by the ZAP handler for `zap_domain`, with
// ZMQ_ZAP_ENFORCE_DOMAIN so that no handler means no connection.
void MakeServer(zmq::socket_t& socket, const KeyPair& own, const std::string& zap_domain);
// A CURVE client of the server whose public key is `server_public`.
void MakeClient(zmq::socket_t& socket, const KeyPair& own, const std::string& server_public);

// True for endpoints that only this machine can reach: tcp:// on 127.x.y.z,
// [::1], ::1 or localhost, and any ipc:// or inproc://. Anything else
// (0.0.0.0, *, an interface name, a LAN address) is not.
bool IsLoopbackEndpoint(const std::string& endpoint);

}  // namespace fedsgd::curve
