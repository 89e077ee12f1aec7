// The socket side of the wire protocol (see wire.h): multipart send and
// receive that report "would block", "peer gone" and "interrupted" as
// values, an EINTR-tolerant poll, and endpoint checks for configuration.
#include <cerrno>
#include <charconv>
#include <iterator>
#include <zmq_addon.hpp>

#include "fedsgd/error.h"
#include "fedsgd/wire.h"

namespace fedsgd::wire {
namespace {

// The next part of a message whose first part was received: a signal must
// not split the message (the rest would read as a message of its own).
void ReceiveRest(zmq::socket_t& socket, zmq::message_t& frame) {
  for (;;) {
    try {
      (void)socket.recv(frame, zmq::recv_flags::none);
      return;
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}

}  // namespace

bool Send(zmq::socket_t& socket, Message message, const zmq::message_t* routing_id) {
  return SendFrames(socket, Encode(std::move(message)), routing_id);
}

bool SendFrames(zmq::socket_t& socket, std::vector<zmq::message_t> frames,
                const zmq::message_t* routing_id) {
  // ZeroMQ queues a multipart message atomically: only its first frame can
  // meet EAGAIN (or EHOSTUNREACH under ZMQ_ROUTER_MANDATORY), so a false
  // return never leaves half a message behind.
  try {
    if (routing_id) {
      zmq::message_t id(routing_id->data(), routing_id->size());
      if (!socket.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    }
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const auto more = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!socket.send(frames[i], more | zmq::send_flags::dontwait)) return false;
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;
    throw;
  }
  return true;
}

std::optional<std::vector<zmq::message_t>> ReceiveFrames(zmq::socket_t& socket,
                                                         zmq::recv_flags flags) {
  std::vector<zmq::message_t> frames;
  try {
    if (!zmq::recv_multipart(socket, std::back_inserter(frames), flags)) return std::nullopt;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;  // a signal: the caller checks its stop flag
    throw;
  }
  return frames;
}

std::optional<BoundedFrames> ReceiveBounded(zmq::socket_t& socket, std::size_t max_frames,
                                            zmq::recv_flags flags) {
  BoundedFrames out;
  if (!ReceiveBounded(socket, max_frames, out, flags)) return std::nullopt;
  return out;
}

bool ReceiveBounded(zmq::socket_t& socket, std::size_t max_frames, BoundedFrames& out,
                    zmq::recv_flags flags) {
  out.frames.clear();
  out.dropped_frames = 0;
  out.dropped_bytes = 0;
  try {
    zmq::message_t frame;
    if (!socket.recv(frame, flags)) return false;
    // The other parts of a multipart message are already here (ZeroMQ
    // delivers messages whole), so these receives do not wait.
    for (;;) {
      const bool more = frame.more();
      if (out.frames.size() < max_frames) {
        out.frames.push_back(std::move(frame));
      } else {
        ++out.dropped_frames;
        out.dropped_bytes += frame.size();
      }
      if (!more) break;
      frame = zmq::message_t();  // releases a dropped frame before the next arrives
      ReceiveRest(socket, frame);
    }
  } catch (const zmq::error_t& e) {
    out.frames.clear();
    if (e.num() == EINTR) return false;  // a signal: the caller checks its stop flag
    throw;
  }
  return true;
}

void Poll(std::vector<zmq::pollitem_t>& items, std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items.data(), items.size(), timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
}

void CheckEndpoint(const std::string& endpoint, bool for_bind) {
  auto bad = [&](const std::string& why) {
    throw Error("invalid ZeroMQ endpoint '" + endpoint + "': " + why +
                " (expected tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
  };
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) {
    if (endpoint.size() <= endpoint.find("//") + 2) bad("empty path");
    return;
  }
  if (endpoint.rfind("tcp://", 0) != 0) bad("unknown transport");
  const std::string rest = endpoint.substr(6);
  const std::size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) bad("no HOST:PORT");
  const std::string host = rest.substr(0, colon), port = rest.substr(colon + 1);
  if (host == "*" && !for_bind) bad("'*' is only for binding; name the host to connect to");
  int p = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  const bool wildcard_port = for_bind && port == "*";
  if (!wildcard_port &&
      (ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535)) {
    bad("port must be 1-65535");
  }
}

}  // namespace fedsgd::wire
