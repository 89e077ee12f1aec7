// HttpApi: the coordinator's JSON endpoints over HTTP (cpp-httplib).
//
//   GET /healthz      {"ok": true}
//   GET /v1/status    run, rounds, model version, devices, state, last accuracy
//   GET /v1/devices   one object per device
//   GET /v1/rounds    committed round records (?since=N&limit=M)
//
// It runs on its own threads and reads only the StatusBoard and its own
// read-only connection to the database, never the round loop's state.
// Unknown paths get a JSON 404; other methods than GET/HEAD a JSON 405.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "status_board.h"

namespace httplib {
class Server;
}

namespace fedsgd {

class CheckpointStore;

class HttpApi {
 public:
  // `store` is a read-only CheckpointStore (or any; it is thread-safe).
  HttpApi(const StatusBoard& board, const CheckpointStore& store, std::int64_t run_id);
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
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Splits "HOST:PORT"; throws fedsgd::Error for anything else.
std::pair<std::string, int> ParseHostPort(const std::string& address);

}  // namespace fedsgd
