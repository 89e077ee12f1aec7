// HttpApi: the coordinator's HTTP side (cpp-httplib): JSON API, Prometheus
// metrics, model downloads and the dashboard page. docs/api.md lists every
// endpoint with an example response.
//
// It runs on cpp-httplib's own threads and reads only the StatusBoard and
// its own read-only connection to the database, never the round loop's
// state: a slow or hostile client can tie up one connection thread (until
// the limits of HttpConnectionGuard close it), never a round. Only GET and
// HEAD exist (405 otherwise); every error, and any exception a handler
// throws, is answered as JSON with the right status code. With a token,
// every endpoint but /healthz wants `Authorization: Bearer TOKEN` (or
// `?token=TOKEN`, for the dashboard in a browser), compared in constant
// time. With a certificate and key it serves HTTPS only.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fedsgd/model.h"
#include "http_connection_guard.h"
#include "status_board.h"

namespace httplib {
class Server;
}

namespace fedsgd {

class CheckpointStore;

// PEM files for HTTPS; both empty: plain HTTP.
struct HttpTls {
  std::string cert_file;
  std::string key_file;
};

class HttpApi {
 public:
  // `store` is a read-only CheckpointStore (it is thread-safe).
  HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id,
          Architecture arch, std::string token, HttpTls tls = {}, HttpConnectionLimits limits = {});
  ~HttpApi();

  // Binds "ADDR:PORT" (port 0 picks a free one) and starts serving. Throws
  // fedsgd::Error when the address is malformed or cannot be bound.
  // An address already served by another process is refused (SO_REUSEADDR
  // only: cpp-httplib's default SO_REUSEPORT let two coordinators share it).
  void Start(const std::string& address);
  int port() const { return port_; }
  void Stop();

 private:
  const StatusBoard& board_;
  const CheckpointStore& store_;
  std::int64_t run_id_;
  Architecture arch_;
  std::string token_;
  HttpConnectionGuard guard_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> listen_returned_{false};
  int port_ = 0;
};

// Splits "HOST:PORT"; throws fedsgd::Error for anything else.
std::pair<std::string, int> ParseHostPort(const std::string& address);

// True for 127.x.y.z, ::1 and localhost (with or without [brackets]).
bool IsLoopbackHost(const std::string& host);

// Both files or neither; throws fedsgd::Error naming the flag when a file
// cannot be read, is not PEM, or the key does not match the certificate.
void CheckTlsFiles(const HttpTls& tls);

// `presented` equals `token`, in time independent of where they differ.
bool TokenMatches(const std::string& presented, const std::string& token);

// The dashboard: one self-contained HTML page (no external resources).
extern const char* const kDashboardHtml;

}  // namespace fedsgd
