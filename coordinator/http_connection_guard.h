// HttpConnectionGuard: keeps the HTTP API answering under slow, idle and
// numerous connections, for cpp-httplib 0.11's Server and SSLServer.
//
// cpp-httplib hands every accepted socket to a TaskQueue and then to the
// server's (private, virtual) process_and_close_socket. With its stock
// ThreadPool of 32 workers, 32 clients trickling header lines each held a
// worker for a whole read timeout per line and /healthz stopped answering.
// GuardedHttpServer / GuardedHttpsServer override process_and_close_socket
// and serve each connection themselves (through the protected
// Server::process_request), on its own thread from NewTaskQueue():
//   - at most `max_connections` at once and `max_per_address` per client
//     IP; a connection over either is closed at once, unread (and counted);
//   - a request (line, headers and any body) must arrive completely within
//     `request_seconds` of its first byte, and the next request on a
//     kept-alive connection must start within `idle_seconds`; the TLS
//     handshake within `request_seconds` as well;
//   - Range headers are ignored (the whole resource is sent), so overlapping
//     ranges cannot multiply a response.
// Threads: one per open connection (bounded by max_connections), created
// by cpp-httplib's accept thread; Stats() and CloseAll() may be called from
// any thread. Memory: a thread stack (mostly untouched) and a few KiB of
// buffers per open connection. Failures of one connection only close it.
#pragma once

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace fedsgd {

struct HttpConnectionLimits {
  std::size_t max_connections = 768;  // below the default 1,024 file descriptors
  std::size_t max_per_address = 16;
  double request_seconds = 5;
  double idle_seconds = 5;
  std::size_t max_requests_per_connection = 100;
};

class HttpConnectionGuard {
 public:
  struct Stats {
    std::size_t open = 0;
    std::uint64_t refused = 0;    // closed at once: over a connection limit
    std::uint64_t timed_out = 0;  // a request or TLS handshake came too slowly
  };

  explicit HttpConnectionGuard(HttpConnectionLimits limits) : limits_(limits) {}

  const HttpConnectionLimits& limits() const { return limits_; }
  // For Server::new_task_queue: one thread per connection, at most
  // max_connections + a few; beyond that the connection is refused inline.
  httplib::TaskQueue* NewTaskQueue();
  Stats stats() const;
  // Shuts down every open connection (on Stop(): idle keep-alive
  // connections end now instead of after idle_seconds).
  void CloseAll();

  // One request on `stream`, as Server::process_request does it.
  using RequestProcessor =
      std::function<bool(httplib::Stream& stream, bool close_connection, bool& connection_closed)>;
  // Serves an accepted socket until it closes, times out or is refused, then
  // closes it. `ssl_ctx` non-null: TLS. Called by the servers below.
  void Serve(int sock, void* ssl_ctx, const std::function<bool()>& running,
             const RequestProcessor& process);

  // Removes the Range header and ranges cpp-httplib parsed (setup_request).
  static void IgnoreRanges(httplib::Request& req);

 private:
  bool Admit(int sock, std::string& address);
  void Release(int sock, const std::string& address);

  const HttpConnectionLimits limits_;
  mutable std::mutex mutex_;
  std::map<std::string, std::size_t> per_address_;
  std::set<int> open_;
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> timed_out_{0};
};

inline constexpr int kListenBacklog = 1024;

class GuardedHttpServer : public httplib::Server {
 public:
  explicit GuardedHttpServer(HttpConnectionGuard& guard);
  // cpp-httplib listens with a backlog of 5: a burst of connections would
  // wait for SYN retries. Call after bind_to_port.
  void WidenBacklog() { ::listen(svr_sock_, kListenBacklog); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  HttpConnectionGuard& guard_;
};

class GuardedHttpsServer : public httplib::SSLServer {
 public:
  GuardedHttpsServer(HttpConnectionGuard& guard, const std::string& cert_file,
                     const std::string& key_file);
  void WidenBacklog() { ::listen(svr_sock_, kListenBacklog); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  HttpConnectionGuard& guard_;
};

}  // namespace fedsgd
