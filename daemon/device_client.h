// DeviceClient: the daemon's side of docs/protocol.md.
//
// Run() is the network thread: it alone owns the DEALER (requests) and SUB
// (broadcasts) sockets. It joins, keeps heartbeats flowing (also while a
// TrainingJob trains on other threads), starts a job for each new round,
// sends the update when the job is done, and fetches the model when it sees
// it has missed one. When the coordinator stays silent it drops both sockets
// and joins again after a capped exponential backoff with jitter: a
// restarted coordinator is never a reason to exit.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <zmq.hpp>

#include "backoff.h"
#include "daemon_options.h"
#include "fedsgd/dataset.h"
#include "fedsgd/plan.h"
#include "fedsgd/service_notifier.h"
#include "fedsgd/wire.h"
#include "training_job.h"

namespace fedsgd {

class DeviceClient {
 public:
  // `shard` is this device's data (already cut); it must outlive the client.
  DeviceClient(DaemonOptions options, const Dataset& shard, std::ostream& log);
  ~DeviceClient();

  // Runs until *stop becomes true, or, with exit_when_done, until the
  // coordinator announces the end of the run. Returns the exit status.
  int Run(const std::atomic<bool>& stop);

  // Figures for tests.
  std::uint64_t updates_sent() const { return updates_sent_; }
  std::uint64_t joins() const { return joins_; }

 private:
  using Clock = std::chrono::steady_clock;
  double Now() const;
  void Connect();
  void Disconnect();
  bool Send(wire::Message message);
  void HandleReply(std::vector<zmq::message_t>& frames);
  void HandleModel(wire::Model& model, const char* via);
  void HandleWelcome(wire::Welcome& welcome);
  void StartTraining(std::uint64_t round);
  void FinishTraining();
  std::string PublishEndpoint(const std::string& announced) const;
  void Log(const std::string& line, LogLevel level = LogLevel::kInfo);

  DaemonOptions options_;
  const Dataset& shard_;
  std::ostream& log_;
  TrainMode mode_;
  int threads_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<zmq::socket_t> sub_;
  Backoff backoff_;
  Clock::time_point start_;
  ServiceNotifier notifier_;
  bool ready_ = false;  // told systemd once, at the first welcome

  // Session state, reset on every reconnect.
  bool joined_ = false;
  double join_sent_at_ = -1;  // < 0: not yet sent
  double last_reply_ = 0;
  double last_heartbeat_ = 0;
  int heartbeat_ms_ = 1000;

  // What this device knows of the run.
  std::optional<Plan> plan_;
  std::string run_id_;
  std::uint64_t model_version_ = 0;
  std::vector<float> params_;
  std::uint64_t last_trained_round_ = 0;  // newest round trained since the last welcome
  bool fetch_pending_ = false;
  bool plan_unusable_ = false;
  bool finished_ = false;
  std::unique_ptr<TrainingJob> job_;
  double last_samples_per_second_ = 0;
  double last_loss_ = 0;
  std::uint64_t updates_sent_ = 0;
  std::uint64_t joins_ = 0;
};

}  // namespace fedsgd
