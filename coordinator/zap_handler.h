// ZapHandler: the coordinator's ZeroMQ authentication handler (ZAP 1.0,
// ZeroMQ RFC 27) for CURVE.
//
// libzmq asks it about every CURVE handshake on a socket of the same context
// that sets ZMQ_ZAP_DOMAIN: it binds a REP socket to inproc://zeromq.zap.01
// and answers on its own thread. It admits a client whose public key is in
// the KeyStore's current snapshot, for the domain "fedsgd" only, and returns
// the device id as the User-Id (status 200), which libzmq then attaches to
// every message of that connection; anything else gets 400 and a log line
// saying why (an unknown key is named by its first 8 Z85 characters).
//
// Threads: construct and destroy on the coordinator's thread; the REP
// socket is created there and then used only by the handler's thread.
// RequestReload() may be called from any thread: the handler thread re-reads
// the KeyStore directory (on SIGHUP). Log lines are queued and handed to the
// coordinator's thread by TakeLog(), so the log stream has one writer.
// Memory: the queue holds at most 1000 lines (more are counted, not kept).
// Fails: the constructor throws fedsgd::Error when the inproc endpoint is
// taken (another handler in the same context).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "key_store.h"

namespace fedsgd {

// The ZAP domain the coordinator's sockets set.
inline constexpr const char* kZapDomain = "fedsgd";

class ZapHandler {
 public:
  ZapHandler(zmq::context_t& context, KeyStore& keys);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  void RequestReload() { reload_requested_.store(true); }
  // Log lines since the last call, oldest first.
  std::vector<std::string> TakeLog();
  std::uint64_t admitted() const { return admitted_.load(); }
  std::uint64_t refused() const { return refused_.load(); }

 private:
  void Serve();
  void Answer(std::vector<zmq::message_t>& request);
  void Log(std::string line);

  KeyStore& keys_;
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_requested_{false};
  std::atomic<std::uint64_t> admitted_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::mutex log_mutex_;
  std::vector<std::string> log_;
  std::uint64_t log_dropped_ = 0;  // guarded by log_mutex_
  std::thread thread_;
};

}  // namespace fedsgd
