// The ZAP 1.0 handler (see zap_handler.h).
#include "zap_handler.h"

#include <array>
#include <chrono>

#include "fedsgd/curve_keys.h"
#include "fedsgd/error.h"

namespace fedsgd {
namespace {

constexpr std::size_t kMaxLogLines = 1000;

std::string Text(const zmq::message_t& frame) {
  return std::string(static_cast<const char*>(frame.data()), frame.size());
}

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& context, KeyStore& keys)
    : keys_(keys), socket_(context, zmq::socket_type::rep) {
  socket_.set(zmq::sockopt::linger, 0);
  try {
    socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    throw Error(std::string("cannot start the CURVE authentication handler: ") + e.what());
  }
  // From here on only the handler thread touches socket_ (thread start is
  // the memory barrier ZeroMQ asks for when a socket changes thread).
  thread_ = std::thread([this] { Serve(); });
}

ZapHandler::~ZapHandler() {
  stop_.store(true);
  thread_.join();
}

std::vector<std::string> ZapHandler::TakeLog() {
  std::lock_guard lock(log_mutex_);
  std::vector<std::string> lines;
  lines.swap(log_);
  if (log_dropped_ > 0) {
    lines.push_back("authentication: " + std::to_string(log_dropped_) + " more log lines dropped");
    log_dropped_ = 0;
  }
  return lines;
}

void ZapHandler::Log(std::string line) {
  std::lock_guard lock(log_mutex_);
  if (log_.size() < kMaxLogLines) {
    log_.push_back(std::move(line));
  } else {
    ++log_dropped_;
  }
}

void ZapHandler::Serve() {
  std::array<zmq::pollitem_t, 1> items = {{{socket_.handle(), 0, ZMQ_POLLIN, 0}}};
  while (!stop_.load()) {
    if (reload_requested_.exchange(false)) {
      try {
        const auto keys = keys_.Reload();
        Log("authorized keys reloaded from " + keys_.dir() + ": " +
            std::to_string(keys->key_by_id.size()) + " device(s)");
        for (const std::string& problem : keys->problems) Log("refused: " + problem);
      } catch (const Error& e) {
        Log(std::string("authorized keys NOT reloaded, the previous list stays: ") + e.what());
      }
    }
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> request;
      zmq::message_t frame;
      do {
        if (!socket_.recv(frame, zmq::recv_flags::dontwait)) break;
        request.push_back(std::move(frame));
        frame = zmq::message_t();
      } while (socket_.get(zmq::sockopt::rcvmore));
      Answer(request);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      Log(std::string("authentication handler: ") + e.what());
    }
  }
}

void ZapHandler::Answer(std::vector<zmq::message_t>& request) {
  // ZAP 1.0 request: version, request id, domain, address, routing id,
  // mechanism, credentials (for CURVE: the client's 32-byte public key).
  std::string status = "400", reason, user_id;
  std::string request_id = request.size() > 1 ? Text(request[1]) : "";
  const std::string address = request.size() > 3 ? Text(request[3]) : "?";
  if (request.size() < 7 || Text(request[0]) != "1.0") {
    reason = "malformed ZAP request";
  } else if (Text(request[2]) != kZapDomain) {
    reason = "wrong ZAP domain '" + Text(request[2]) + "'";
  } else if (Text(request[5]) != "CURVE" || request[6].size() != 32) {
    reason = "mechanism " + Text(request[5]) + " is not CURVE";
  } else {
    std::array<char, curve::kZ85KeyLength + 1> z85{};
    zmq_z85_encode(z85.data(), static_cast<const std::uint8_t*>(request[6].data()), 32);
    const std::string key(z85.data());
    const auto keys = keys_.Snapshot();
    const auto it = keys->id_by_key.find(key);
    if (it == keys->id_by_key.end()) {
      reason = "unknown key " + curve::KeyFingerprint(key) + "... (not in " + keys_.dir() + ")";
    } else {
      status = "200";
      user_id = it->second;
    }
  }
  if (status == "200") {
    admitted_.fetch_add(1);
  } else {
    refused_.fetch_add(1);
    Log("refused a CURVE connection from " + address + ": " + reason);
  }
  const std::array<std::string, 6> reply = {
      "1.0", request_id, status, status == "200" ? "OK" : reason, user_id, ""};
  for (std::size_t i = 0; i < reply.size(); ++i) {
    socket_.send(zmq::buffer(reply[i]),
                 i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

}  // namespace fedsgd
