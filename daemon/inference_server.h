// InferenceServer: the daemon's local inference endpoint. Programs on the
// board connect to a Unix socket, write one sample per line and read one
// JSON answer per line (inference_protocol.h, docs/inference.md), always
// from the newest model in a ModelSlot.
//
// One thread of its own serves every connection (poll, non-blocking
// sockets): it never touches the daemon's ZeroMQ sockets and the training
// loop never waits for it; a new model reaches it through the slot. Samples
// that arrive together are predicted in batches of up to max_batch, each
// batch by one model. Everything is bounded: a line longer than
// max_line_bytes is answered 413 and the connection closed; a client that
// does not read its answers stops being read once max_pending_output bytes
// wait for it; connections beyond max_connections are answered 503 and
// closed. Memory is allocated on first use (the Workspace when the first
// sample arrives), so an idle endpoint costs a thread and a copy of the
// model.
//
// The socket file is created with mode 0660 (its owner and group may
// connect). A stale socket file at the path (no one accepting) is replaced;
// a live one, or a path that is not a socket, is an error.
//
// Thread-safety: construct and destroy from one thread; the counters may be
// read from any thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

#include "model_slot.h"

namespace fedsgd {

struct InferenceServerLimits {
  std::size_t max_line_bytes = 512 * 1024;
  std::size_t max_pending_output = 1024 * 1024;
  int max_connections = 16;
  int max_batch = 64;
};

class InferenceServer {
 public:
  // Binds `path` and starts serving `slot`, which must outlive the server.
  // Throws fedsgd::Error (path too long for a Unix socket, in use, not a
  // socket, or a directory that cannot hold it).
  InferenceServer(std::string path, const ModelSlot& slot, InferenceServerLimits limits = {});
  // Stops the thread, closes every connection and removes the socket file.
  ~InferenceServer();
  InferenceServer(const InferenceServer&) = delete;
  InferenceServer& operator=(const InferenceServer&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t predictions() const { return predictions_.load(); }
  std::uint64_t errors() const { return errors_.load(); }
  std::uint64_t connections() const { return connections_.load(); }

 private:
  struct Connection;
  void Loop();

  std::string path_;
  const ModelSlot& slot_;
  InferenceServerLimits limits_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd: written to stop the loop
  ino_t inode_ = 0;   // the socket file's, so only it is removed
  std::atomic<std::uint64_t> predictions_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> connections_{0};
  std::thread thread_;
};

}  // namespace fedsgd
