// DeviceClient: the daemon's side of docs/protocol.md.
//
// Run() is the network thread: it alone owns the DEALER (requests) and SUB
// (broadcasts) sockets. It joins, keeps heartbeats flowing (also while a
// TrainingJob trains on other threads), starts a job for each new round,
// sends the update when the job is done, and fetches the model when it sees
// it has missed one. When the coordinator stays silent it drops both sockets
// and joins again on fresh ones after a capped exponential backoff with
// jitter: a restarted coordinator is never a reason to exit. A plan that
// does not fit this device's data is logged and asked for again slowly.
//
// Federated evaluation: when the plan's eval_fraction > 0 the shard is split
// (seeded, stratified by class: fedsgd/holdout.h) into a training set and a
// held-out set that is never trained on; each job scores the global model on
// the held-out set first and the Update carries the result. Memory: the two
// parts are index views of the shard (one size_t per sample), cut again only
// when eval_fraction changes. --simulate-attack (a simulation aid,
// simulated_attack.h) changes the sent update, or trains on a label-flipped
// copy of the training part.
//
// Inference: with --inference-socket, Run() starts an InferenceServer
// (inference_server.h) on a thread of its own and hands it each new global
// model through a ModelSlot (a copy of the parameters per model version);
// before the first model arrives it serves the one saved in --state-dir.
//
// Thread-safety: Run() is called once, from one thread; the figures below
// may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "daemon_options.h"
#include "fedsgd/backoff.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/dataset.h"
#include "fedsgd/holdout.h"
#include "fedsgd/log_limiter.h"
#include "fedsgd/plan.h"
#include "fedsgd/service_notifier.h"
#include "fedsgd/wire.h"
#include "inference_server.h"
#include "model_slot.h"
#include "simulated_attack.h"
#include "training_job.h"
#include "update_compressor.h"

namespace fedsgd {

// How patient the client is. The defaults are the protocol's; tests shorten
// them.
struct ClientTiming {
  double backoff_initial = 0.25;  // seconds before the first reconnect
  double backoff_cap = 8.0;
  double backoff_jitter = 0.25;
  // The coordinator is given up after 3 x heartbeat_ms without a reply, and
  // never sooner than this: the coordinator's own offline rule has the same
  // floor, and a coordinator busy committing a round is not gone.
  double min_silence = 3.0;
  // A plan that does not fit the data: join again this often (+/- jitter)
  // in case the coordinator was restarted with another plan.
  double unfit_retry = 30.0;
};

class DeviceClient {
 public:
  // `shard` is this device's data (already cut); it must outlive the client.
  // Log lines ("<id>: <event>") go to `log`, which only Run()'s thread uses.
  DeviceClient(DaemonOptions options, const Dataset& shard, std::ostream& log,
               ClientTiming timing = {});
  ~DeviceClient();
  DeviceClient(const DeviceClient&) = delete;
  DeviceClient& operator=(const DeviceClient&) = delete;

  // Runs until *stop becomes true (returns within ~0.1 s plus the current
  // mini-batch), or, with exit_when_done, until the coordinator announces
  // the end of the run. Returns the exit status (0). Throws zmq::error_t
  // only for an endpoint ZeroMQ refuses outright.
  int Run(const std::atomic<bool>& stop);

  // Figures for tests and status.
  std::uint64_t updates_sent() const { return updates_sent_.load(); }
  std::uint64_t joins() const { return joins_.load(); }
  std::uint64_t reconnects() const { return reconnects_.load(); }
  std::uint64_t bad_messages() const { return bad_messages_.load(); }
  std::uint64_t dozes() const { return dozes_.load(); }  // --idle-disconnect

 private:
  double Now() const;
  void OpenDealer();
  void Subscribe();  // to publish_endpoint_
  void Connect();
  void Disconnect();
  // --idle-disconnect: after an Ack, close the sockets until the next
  // heartbeat if pace steering put it S or more away and nothing is under
  // way; Wake opens them again, still joined.
  void MaybeDoze(const wire::Ack& ack);
  void Wake();
  void ReconnectLater(double delay);
  bool Send(wire::Message message);
  // Options every socket to the coordinator gets: handshake timeout, CURVE.
  void ConfigureSocket(zmq::socket_t& socket);
  void Receive();
  void HandleReply(std::vector<zmq::message_t>& frames);
  void HandleBroadcast(std::vector<zmq::message_t>& frames);
  // Decode limits for the coordinator's messages: once joined, the model's
  // size and the plan's broadcast encoding; before, anything the wire allows.
  wire::Limits ModelLimits() const;
  void HandleWelcome(wire::Welcome& welcome);
  void HandleModel(wire::Model& model);
  void HandleAck(const wire::Ack& ack);
  void RejoinNow();
  std::optional<std::string> CheckPlan(const wire::Welcome& welcome, Plan& plan) const;
  void StartTraining(std::uint64_t round);
  void CancelTraining();
  void FinishTraining();
  // With device selection an update waits for an upload slot first
  // (awaiting_upload_) unless `granted`.
  void SendUpdate(TrainingResult result, bool granted = false);
  // Cuts the shard into training and held-out parts for the plan (once per
  // eval_fraction) and applies a label-flip attack to the training part.
  void PrepareData(const Plan& plan);
  void Tick();
  // Keeps the newest model in --state-dir (saved_model.h): at most every
  // kSaveInterval seconds, and always with `force` (the run's end, a stop).
  // Keeps the personalised copy of a result (Plan::personalize_steps) in
  // --state-dir as personal.npy / personal.json, hands it to the inference
  // endpoint with --inference-model personal, and frees it.
  void SavePersonalModel(TrainingResult& r);
  void SaveNewestModel(bool force);
  static constexpr double kSaveInterval = 5;
  // --inference-socket: starts the server (throws fedsgd::Error if it
  // cannot) with the model saved in --state-dir, if any.
  void StartInference();
  // Hands the newest model to the inference server when it has changed.
  void PublishNewestModel();
  // The plan's asynchronous mode (FedBuff): train continuously, never
  // cancel a job because a newer model arrived.
  bool Async() const { return plan_ && plan_->async(); }
  // The plan's device selection: train a round only when invited, send the
  // update only when given a slot.
  bool Selective() const { return plan_ && plan_->selection(); }
  // Asynchronous: starts the next job if none runs, no update awaits its
  // answer and this device has not trained from its newest model yet.
  void TrainNextAsync();
  std::string PublishEndpoint(const std::string& announced) const;
  void Log(const std::string& line, LogLevel level = LogLevel::kInfo);
  void DropBad(const std::string& what);
  // A warning, unless too many of its `key` were logged lately (LogLimiter);
  // the loop logs a summary of those held back.
  void Warn(std::string_view key, const std::string& line);

  DaemonOptions options_;
  const Dataset& shard_;
  // The shard's training and held-out samples (indices: both parts are
  // views of the one shard); split_fraction_ is the eval_fraction they were
  // cut for (< 0: not yet cut). Under a label-flip attack the training part
  // is a copy, flipped_, with its labels changed.
  HoldOutSplit split_;
  Dataset flipped_;
  double split_fraction_ = -1;
  int split_classes_ = 0;  // the model's classes the labels were flipped for
  SimulatedAttack attack_;
  std::mt19937_64 attack_rng_;
  UpdateCompressor compressor_;  // the plan's update codec, with its own RNG
  std::ostream& log_;
  ClientTiming timing_;
  TrainMode mode_;
  int threads_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<zmq::socket_t> sub_;
  Backoff backoff_;
  std::chrono::steady_clock::time_point start_;
  ServiceNotifier notifier_;
  bool ready_ = false;  // told systemd once, at the first welcome
  // CURVE keys (--key/--coordinator-key); empty: plain ZMTP.
  std::optional<curve::KeyPair> curve_keys_;
  std::string coordinator_public_key_;
  bool curve_hint_logged_ = false;  // the "check your keys" hint, once

  // Connection state. reconnect_at_ >= 0: both sockets are closed until then.
  double reconnect_at_ = -1;
  bool joined_ = false;
  double join_sent_at_ = -1;  // < 0: not yet sent on this connection
  double last_reply_ = 0;
  double last_heartbeat_ = 0;
  double fetch_sent_at_ = -1;  // < 0: no FetchModel outstanding
  int heartbeat_ms_ = 1000;
  std::string publish_endpoint_;    // the welcome's, resolved
  double wake_at_ = -1;             // >= 0: dozing, no sockets, until then (--idle-disconnect)
  bool wake_beat_pending_ = false;  // woken, its heartbeat not sent yet
  bool doze_logged_ = false;

  // What this device knows of the run.
  std::optional<Plan> plan_;
  std::string run_id_;
  std::uint64_t model_version_ = 0;
  SharedParams params_;              // null until a model arrives (a selection welcome has none)
  std::size_t parameter_count_ = 0;  // the plan's model's
  std::uint64_t last_trained_round_ = 0;  // newest round trained since the last welcome
  std::uint64_t announced_round_ = 0;     // the open round the coordinator last told of
  // The model last written to --state-dir: (run, version), and when.
  std::string saved_run_id_;
  std::uint64_t saved_version_ = 0;
  double saved_at_ = -1e9;
  // The model the inference endpoint serves, (run, version) last handed to
  // it; the server, declared after the slot it reads, stops first.
  ModelSlot served_;
  std::string served_run_id_;
  std::uint64_t served_version_ = 0;
  // --inference-model personal: the run whose personalised copy is served
  // (empty: none yet; the global model is).
  std::string served_personal_run_;
  std::unique_ptr<InferenceServer> inference_;
  // Asynchronous: an update was sent and its Ack or Reject has not come yet.
  bool update_in_flight_ = false;
  double update_sent_at_ = 0;
  std::string unfit_reason_;  // non-empty: the plan does not fit; not training
  bool finished_ = false;
  std::unique_ptr<TrainingJob> job_;
  std::string job_run_id_;
  // A result finished while not joined: sent after the welcome if the round
  // is still the open one, else dropped.
  std::optional<TrainingResult> unsent_;
  std::string unsent_run_id_;
  // Device selection (docs/protocol.md): the newest round this device was
  // invited to, and a finished update waiting for an upload slot (asked
  // for again at upload_ask_at_).
  std::uint64_t selected_round_ = 0;
  std::uint64_t unselected_round_ = 0;  // the newest round it was told it is not in
  std::optional<TrainingResult> awaiting_upload_;
  double upload_ask_at_ = 0;
  double last_samples_per_second_ = 0;
  double last_loss_ = 0;
  LogLimiter warnings_;

  std::atomic<std::uint64_t> updates_sent_{0};
  std::atomic<std::uint64_t> joins_{0};
  std::atomic<std::uint64_t> reconnects_{0};
  std::atomic<std::uint64_t> bad_messages_{0};
  std::atomic<std::uint64_t> dozes_{0};
};

}  // namespace fedsgd
