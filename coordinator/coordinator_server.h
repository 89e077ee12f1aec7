// CoordinatorServer: the coordinator process's parts wired together.
//
// Owns the ZeroMQ ROUTER (requests) and PUB (broadcasts) sockets and uses
// them from the thread that calls Run() only. Decodes and validates every
// request, feeds the RoundManager, evaluates and commits each closed round
// to the CheckpointStore in one transaction, then broadcasts the new model.
// Publishes status snapshots for the HttpApi, which serves them on its own
// threads. With --curve-key both sockets are CURVE servers and every
// request's device field must be the id its key is enrolled under
// (docs/security.md); the ZapHandler answers libzmq on its own thread.
//
// With --upstream it is a gateway (docs/protocol.md "Gateways";
// coordinator_gateway.cpp): it serves its boards as above, but takes its
// plan, its model and its rounds from a root coordinator, in which it takes
// part as one device through an UpstreamLink (whose sockets this same loop
// thread owns); each round it closes is forwarded as one update, the
// sample-weighted mean of its boards' updates with their samples in all,
// and committed locally when the root's model of that round arrives.
//
// Its definitions, by concept: coordinator_startup.cpp (Start),
// coordinator_server.cpp (the loop and its requests), coordinator_rounds.cpp
// (open, invite, broadcast, close), coordinator_status.cpp (status for the
// HTTP API), coordinator_security.cpp (CURVE keys and revocation) and
// coordinator_gateway.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "checkpoint_store.h"
#include "connection_monitor.h"
#include "coordinator_options.h"
#include "database_lock.h"
#include "fedsgd/dataset.h"
#include "fedsgd/log_limiter.h"
#include "fedsgd/service_notifier.h"
#include "flow_control.h"
#include "http_api.h"
#include "key_store.h"
#include "round_manager.h"
#include "status_board.h"
#include "token_bucket.h"
#include "upstream_link.h"
#include "zap_handler.h"

namespace fedsgd {

class CoordinatorServer {
 public:
  CoordinatorServer(CoordinatorOptions options, std::ostream& log);
  ~CoordinatorServer();

  // Opens (resumes) the run in the database, loads the evaluation data, binds
  // the sockets and starts HTTP. A gateway first joins its root and waits
  // for its welcome (the plan), until *stop. Throws fedsgd::Error with a
  // clear message.
  void Start(const std::atomic<bool>* stop = nullptr);
  // Serves until the last round is committed or *stop becomes true. Returns
  // a summary (run_id, round, rounds, test_accuracy, seconds, ...). When
  // *reload becomes true (SIGHUP) it is reset and --authorized-keys re-read.
  nlohmann::json Run(const std::atomic<bool>& stop, std::atomic<bool>* reload = nullptr);

  // Bound endpoints (ports resolved when ":0"/"*" was asked for).
  std::string listen_endpoint() const;
  std::string publish_endpoint() const;
  int http_port() const { return http_ ? http_->port() : 0; }
  std::int64_t run_id() const { return manager_ ? manager_->run_id() : 0; }

 private:
  // Upper bounds of the round-duration histogram, in seconds.
  static constexpr double kDurationBuckets[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  double Now() const;
  void HandleRequest(wire::BoundedFrames& request);
  // Refuses a Join over a limit (rate, samples, device cap); true if refused.
  bool RefuseJoin(const wire::Join& join, const zmq::message_t& routing_id, double now);
  // Starts a warning line, unless too many lines of its `key` were written
  // lately (LogLimiter): then the line goes nowhere. Finish it with "\n".
  std::ostream& Warn(std::string_view key);
  // After the last round: the final model broadcast, and requests answered
  // until the devices that check in late have heard of the end.
  void LingerAfterTheRun(const std::atomic<bool>& stop, std::vector<zmq::pollitem_t>& items);
  static constexpr double kMaxLingerSeconds = 60;
  // Summaries of held-back warnings, and devices forgotten; each loop turn.
  void Housekeeping(double now);
  void Reply(const zmq::message_t& routing_id, wire::Message message);
  void Reply(const zmq::message_t& routing_id, std::vector<zmq::message_t> frames);
  // CURVE: key store, ZAP handler and socket options; the warning when
  // --insecure exposes a keyless coordinator. Before the binds.
  void SetUpSecurity();
  // False (the message refused and counted) when CURVE is on and the
  // message's device is not the id its connection authenticated as, or that
  // id is no longer authorised.
  bool CheckIdentity(zmq::message_t& frame, const wire::Message& message,
                     const zmq::message_t& routing_id);
  // Hands the ZAP handler's log lines over and, after a reload, marks the
  // devices whose key was removed offline.
  void ApplyKeyChanges(std::atomic<bool>* reload);
  void Broadcast(bool final);
  // A Welcome or Model (with empty params) encoded with the current
  // weights in the plan's broadcast_codec; counts the bytes and the model
  // sent. The weights' frame is built once per model version and shared by
  // reference (zmq_msg_copy), so a thousand fetch replies or welcomes
  // queued at once hold one copy of the model, not a thousand.
  std::vector<zmq::message_t> WithWeights(wire::Message message);
  void OpenRound();
  // Device selection: tells every device invited to the round just opened
  // (an Ack with selected = true, pushed on the ROUTER); after its broadcast.
  void Invite();
  // The Ack for a heartbeat: the open round, selection, pace, upload slot.
  wire::Ack HeartbeatAck(DeviceInfo& device, const wire::Heartbeat& beat, double now);
  void CloseRound();
  void PublishStatus();
  std::string Metrics() const;
  // Decode limits for a request: the model's size and the plan's update encoding.
  wire::Limits UpdateLimits() const;
  // Bytes received per accepted update of a round, and 4 x parameter count.
  static double BytesPerUpdate(const RoundRecord& r);
  // The round's norm bound for the log line ("off" when none) and its
  // aggregation note, " (note)" or "".
  static std::string BoundText(const RoundRecord& r);
  static std::string AggregationNote(const RoundRecord& r);
  double ParameterBytes() const;

  // Gateway mode (coordinator_gateway.cpp).
  bool gateway() const { return upstream_ != nullptr; }
  // The loop runs until the last round is committed, or a gateway's root
  // has announced the end of its run.
  bool Done() const { return manager_->done() || root_final_; }
  // Whether to open a round now: a root's rule, or a gateway's (the root's
  // round is open, not yet done here, and --min-devices boards are online).
  bool ShouldOpenRound() const;
  // Joins the root and returns its welcome; throws fedsgd::Error when *stop
  // is set first.
  wire::Welcome JoinRoot(const std::atomic<bool>* stop);
  // The root's plan, or fedsgd::Error saying why a gateway cannot serve it.
  static Plan GatewayPlan(const wire::Welcome& root);
  // Resumes this gateway's run when it has the root's plan and is not
  // ahead of the root, else starts a new one; adopts the root's model.
  RunState StartGatewayRun(const wire::Welcome& root);
  // Each loop turn: what the root sent, the forwarded update, opening the
  // root's round for the boards.
  void GatewayTick();
  void OnRootModel(std::uint64_t version, std::uint64_t round, bool final,
                   std::vector<float>& params);
  void OnRootReject(const wire::Reject& reject);
  // The root's model `version` when this gateway took no part in it.
  void AdoptRootModel(std::uint64_t version, std::vector<float>& params);
  // The forwarded round, committed with the root's model of it.
  void CommitForwarded(std::vector<float>& params);
  // A gateway's CloseRound: the aggregate goes to the root.
  void ForwardRound();
  void SendForwarded();
  GatewayReport Report();
  nlohmann::json GatewayJson() const;

  CoordinatorOptions options_;
  std::ostream& log_;
  Plan plan_;
  wire::TensorEncoding update_encoding_ = wire::TensorEncoding::kFp32;  // the plan's update_codec
  wire::TensorEncoding broadcast_encoding_ = wire::TensorEncoding::kFp32;  // broadcast_codec
  std::unique_ptr<DatabaseLock> db_lock_;  // before store_: released after it closes
  std::unique_ptr<CheckpointStore> store_;
  std::unique_ptr<CheckpointStore> reader_;  // the HTTP side's own connection
  std::unique_ptr<RoundManager> manager_;
  std::optional<Dataset> eval_;
  zmq::context_t context_;
  zmq::socket_t router_;
  zmq::socket_t pub_;
  std::string bound_listen_, bound_publish_;
  std::unique_ptr<KeyStore> keys_;  // null without --curve-key
  std::unique_ptr<ZapHandler> zap_;
  std::uint64_t keys_generation_ = 0;  // the KeyStore snapshot last applied
  StatusBoard board_;
  ServiceNotifier notifier_;
  std::unique_ptr<HttpApi> http_;
  std::chrono::steady_clock::time_point start_;
  std::unique_ptr<ConnectionMonitor> monitor_;
  std::optional<TokenBucket> joins_;    // --max-joins-per-second
  std::optional<UploadSlots> uploads_;  // device selection's flow control
  LogLimiter warnings_;
  std::ostream discard_{nullptr};  // writes nothing: where held-back warnings go

  // Figures for the status and the per-round log line.
  std::optional<RoundRecord> last_round_;
  double last_eval_seconds_ = 0;
  double last_commit_seconds_ = 0;
  double last_broadcast_seconds_ = 0;
  double receive_seconds_ = 0;       // decoding + checking updates, this round
  double last_receive_seconds_ = 0;  // the same for the last committed round
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;    // the tensor frames of welcomes, broadcasts, fetch replies
  std::uint64_t models_sent_ = 0;  // those messages
  // PublishStatus: when the device list was last published, and the fleet
  // size above which it is published only every 2 s.
  double devices_published_at_ = -1e9;
  static constexpr std::size_t kLargeFleet = 1000;
  double last_sweep_ = -1e9;  // Housekeeping's last scan for silent devices
  // WithWeights' shared tensor frame, of model version weights_version_.
  std::unique_ptr<zmq::message_t> weights_frame_;
  std::uint64_t weights_version_ = 0;
  wire::TensorEncoding weights_encoding_ = wire::TensorEncoding::kFp32;
  std::size_t weights_count_ = 0;
  // The receive path's reused memory (issue 11): the request's frames, and
  // the tensor of an update, viewed in its frame while it is handled.
  wire::BoundedFrames request_;
  wire::TensorBuffer update_tensor_;
  std::uint64_t updates_accepted_ = 0;
  std::uint64_t updates_clipped_ = 0;   // by the norm bound, in this process
  std::uint64_t rounds_committed_ = 0;  // by this process
  std::uint64_t rounds_refused_ = 0;    // aggregates that were not finite
  std::uint64_t frames_dropped_ = 0;    // frames beyond wire::kMaxFrames, never kept
  std::uint64_t replies_dropped_ = 0;   // the peer's queue was full or it was gone
  // Round durations (open to commit) as a Prometheus histogram.
  std::vector<std::uint64_t> duration_buckets_;
  double duration_sum_ = 0;
  bool resumed_ = false;

  // Gateway mode: the link to the root and what it said.
  std::unique_ptr<UpstreamLink> upstream_;
  std::vector<wire::Message> upstream_events_;
  std::uint64_t root_round_ = 0;  // the round open at the root, 0 = none
  bool root_final_ = false;       // the root's run is over
  // The round closed here and sent up, until the root's model of it comes.
  std::optional<ClosedRound> forwarded_;
  wire::Update forwarded_update_;
  bool forwarded_sent_ = false;
  std::uint64_t given_up_round_ = 0;  // refused by the root: not opened again
  std::uint64_t updates_forwarded_ = 0;
  std::uint64_t root_rejects_ = 0;
  GatewayReport report_;
  double report_at_ = -1e9;
};

}  // namespace fedsgd
