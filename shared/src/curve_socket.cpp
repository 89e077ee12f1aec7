// CURVE socket options (see fedsgd/curve_socket.h).
#include "fedsgd/curve_socket.h"

namespace fedsgd::curve {
namespace {

// A DRAFT option in zmq.h (hidden without ZMQ_BUILD_DRAFT_API) that libzmq
// 4.3 implements: without it a CURVE server with no ZAP handler admits
// everyone.
constexpr int kZapEnforceDomain = 93;

}  // namespace

void MakeServer(zmq::socket_t& socket, const KeyPair& own, const std::string& zap_domain) {
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, own.secret_key);
  socket.set(zmq::sockopt::zap_domain, zap_domain);
  const int enforce = 1;
  if (zmq_setsockopt(socket.handle(), kZapEnforceDomain, &enforce, sizeof enforce) != 0) {
    throw zmq::error_t();
  }
}

void MakeClient(zmq::socket_t& socket, const KeyPair& own, const std::string& server_public) {
  socket.set(zmq::sockopt::curve_serverkey, server_public);
  socket.set(zmq::sockopt::curve_publickey, own.public_key);
  socket.set(zmq::sockopt::curve_secretkey, own.secret_key);
}

bool IsLoopbackEndpoint(const std::string& endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string host = endpoint.substr(6);
  // A connect endpoint may name a source first: "tcp://SRC;HOST:PORT".
  if (const auto semi = host.find(';'); semi != std::string::npos) host = host.substr(semi + 1);
  if (host.starts_with("[")) {
    const auto close = host.find(']');
    return close != std::string::npos && host.substr(1, close - 1) == "::1";
  }
  const auto colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  // "127.example.org" is a name anyone may own: only digits and dots count.
  const bool numeric = host.find_first_not_of("0123456789.") == std::string::npos;
  return host == "localhost" || host == "::1" || (numeric && host.starts_with("127."));
}

}  // namespace fedsgd::curve
