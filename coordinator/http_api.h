// HttpApi: the coordinator's HTTP side (cpp-httplib): JSON API, Prometheus
// metrics, model downloads and the dashboard page. docs/api.md lists every
// endpoint with an example response.
//
// It runs on cpp-httplib's own threads and reads only the StatusBoard and
// its own read-only connection to the database, never the round loop's
// state: a slow or hostile client can tie up an HTTP worker (each for at
// most the read/write timeouts), never a round. Only GET and HEAD exist;
// errors are JSON with the right status code. With a token, every endpoint
// but /healthz wants `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for
// the dashboard in a browser).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "fedsgd/model.h"
#include "status_board.h"

namespace httplib {
class Server;
}

namespace fedsgd {

class CheckpointStore;

class HttpApi {
 public:
  // `store` is a read-only CheckpointStore (it is thread-safe).
  HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id,
          Architecture arch, std::string token);
  ~HttpApi();

  // Binds "ADDR:PORT" (port 0 picks a free one) and starts serving. Throws
  // fedsgd::Error when the address is malformed or cannot be bound.
  void Start(const std::string& address);
  int port() const { return port_; }
  void Stop();

 private:
  const StatusBoard& board_;
  const CheckpointStore& store_;
  std::int64_t run_id_;
  Architecture arch_;
  std::string token_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Splits "HOST:PORT"; throws fedsgd::Error for anything else.
std::pair<std::string, int> ParseHostPort(const std::string& address);

// A NumPy .npy file (format 1.0) holding `values` as a 1-D little-endian
// float32 array.
std::string NpyFile(const std::vector<float>& values);

// The dashboard: one self-contained HTML page (no external resources).
extern const char* const kDashboardHtml;

}  // namespace fedsgd
