// CoordinatorServer: start-up, the message loop and its requests of
// docs/protocol.md (see coordinator_server.h); rounds are in
// coordinator_rounds.cpp.
#include "coordinator_server.h"

#include <cstdio>
#include <limits>
#include <thread>

#include "fedsgd/broadcast_codec.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/socket_options.h"
#include "file_limit.h"
#include "initial_model.h"
#include "two_tier_plan.h"
#include "wall_clock.h"

namespace fedsgd {
namespace {

using Clock = std::chrono::steady_clock;

// Messages queued for one peer on the ROUTER, each way. A reply can be a
// whole model: 4 of them bound what one connection that never reads (or a
// burst of requests) can make the coordinator hold (docs/security.md).
constexpr int kRouterHighWaterMark = 4;

// 50, 0.5: for messages naming a limit.
std::string Number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

std::string PeerAddress(zmq::message_t& frame) {
  try {
    const char* address = frame.gets("Peer-Address");
    return address ? address : "";
  } catch (const zmq::error_t&) {
    return "";  // not reported for this transport
  }
}

}  // namespace

CoordinatorServer::CoordinatorServer(CoordinatorOptions options, std::ostream& log)
    : options_(std::move(options)),
      log_(log),
      router_(context_, zmq::socket_type::router),
      pub_(context_, zmq::socket_type::pub) {}

CoordinatorServer::~CoordinatorServer() {
  if (http_) http_->Stop();
}

double CoordinatorServer::Now() const { return Since(start_); }

void CoordinatorServer::Start(const std::atomic<bool>* stop) {
  start_ = Clock::now();
  options_.Check();  // the same checks as --check-config, before touching anything
  // A gateway serves its root's plan (coordinator_gateway.cpp).
  std::optional<wire::Welcome> root;
  if (options_.gateway()) root = JoinRoot(stop);
  plan_ = root ? GatewayPlan(*root) : options_.ToPlan();
  update_encoding_ = wire::UpdateCodec::Parse(plan_.update_codec).encoding;
  broadcast_encoding_ = wire::ParseBroadcastCodec(plan_.broadcast_codec);
  RoundSettings settings = options_.ToRoundSettings();
  // A gateway's run ends when its root's does.
  if (root) settings.rounds = std::numeric_limits<std::uint64_t>::max();
  const Architecture arch = plan_.architecture();

  if (!options_.eval_data.empty()) {
    CsvOptions csv;
    csv.classification = arch.num_classes() > 0;
    eval_ = LoadDataset(options_.eval_data, Split::kTest, csv);
    if (eval_->num_features != arch.input_size()) {
      throw Error(options_.eval_data + ": the evaluation data has " +
                  std::to_string(eval_->num_features) + " features but model " + arch.ToString() +
                  " expects " + std::to_string(arch.input_size()));
    }
  }

  db_lock_ = DatabaseLock::Acquire(options_.db);
  store_ = CheckpointStore::Open(options_.db);
  std::vector<float> initial;
  if (root) {
    // The root's model; StartGatewayRun stores it.
  } else if (plan_.initial_model.empty()) {
    initial = Model::Create(arch, plan_.seed).params;
  } else {
    InitialModel m = LoadInitialModel(plan_.initial_model, arch);
    if (m.sha256 != plan_.initial_model_sha256) {
      throw Error("--initial-model " + m.source + " changed while the coordinator started");
    }
    initial = std::move(m.params);
  }
  RunState run =
      root ? StartGatewayRun(*root) : store_->StartRun(plan_.ToJson(), initial, options_.new_run);
  resumed_ = run.resumed;
  reader_ = CheckpointStore::Open(options_.db, /*read_only=*/true);
  const Plan round_plan = root ? GatewayRoundPlan(plan_) : plan_;
  manager_ = std::make_unique<RoundManager>(round_plan, settings, run.run_id, run.round,
                                            std::move(run.params), MakeAggregator(round_plan),
                                            std::move(run.state));
  if (root) root_round_ = root->round;
  if (plan_.selection()) {
    // A grant unused for three heartbeats is the device's loss, not a slot's.
    uploads_.emplace(settings.upload_slots, std::max(5.0, 3.0 * options_.heartbeat_ms / 1000.0));
  }
  if (plan_.async() && run.round > 0) {
    // Updates committed before a restart must not be applied again when
    // their devices, unsure whether they arrived, send them once more.
    const auto window = static_cast<std::uint64_t>(plan_.max_staleness) + 1;
    const std::uint64_t since = run.round > window ? run.round - window : 0;
    manager_->RestoreApplied(store_->ListRounds(run.run_id, since, window));
  }
  if (!resumed_ && run.round == 0) {
    last_round_.reset();
  } else if (auto r = store_->GetRound(run.run_id, run.round)) {
    last_round_ = *r;
    if (plan_.dp()) {
      // Resuming without it would report the privacy spent so far as 0.
      if (!r->privacy.is_object()) {
        throw Error(options_.db + ": round " + std::to_string(run.round) + " of run " +
                    std::to_string(run.run_id) +
                    " has no privacy record although the run uses differential privacy: the "
                    "database is damaged");
      }
      manager_->RestorePrivacy(r->privacy);
    }
  }

  const std::size_t n = manager_->params().size();
  joins_.emplace(options_.max_joins_per_second, options_.max_joins_per_second);
  const FileLimit files = RaiseFileLimit();
  router_.set(zmq::sockopt::linger, 0);
  // libzmq drops a frame larger than the largest legal one (an update's
  // tensor) before it reaches us, and closes that connection.
  SocketLimits limits;
  // A topk frame of k entries takes at most 4 + 9k bytes (a count, float32
  // values, varint indices of up to 5 bytes): with a fraction above ~4/9
  // it can be larger than the fp32 one.
  const wire::UpdateCodec codec = wire::UpdateCodec::Parse(plan_.update_codec);
  const std::size_t topk_floats =
      codec.encoding == wire::TensorEncoding::kTopK
          ? (wire::TopKFrameBytesAtMost(codec.TopKCount(n)) + sizeof(float) - 1) / sizeof(float)
          : 0;
  limits.max_frame_bytes = MaxFrameBytes(std::max(n, topk_floats));
  limits.send_hwm = kRouterHighWaterMark;
  limits.receive_hwm = kRouterHighWaterMark;
  ApplySocketLimits(router_, limits);
  // A reply to a full queue or a vanished peer fails (and is counted)
  // instead of being dropped silently.
  router_.set(zmq::sockopt::router_mandatory, 1);
  // A fleet coming up (or back after a restart) connects all at once; with
  // libzmq's backlog of 100 the kernel drops the SYNs beyond it and those
  // devices wait out TCP's retransmission (1 s, 3 s, 7 s...).
  router_.set(zmq::sockopt::backlog, 4096);
  pub_.set(zmq::sockopt::backlog, 4096);
  pub_.set(zmq::sockopt::linger, 0);
  limits.send_hwm = 8;  // a slow subscriber misses old models, it does not pile them up
  limits.receive_hwm = -1;
  ApplySocketLimits(pub_, limits);
  monitor_ = std::make_unique<ConnectionMonitor>(context_, router_, "router");
  SetUpSecurity();
  try {
    router_.bind(options_.listen);
  } catch (const zmq::error_t& e) {
    throw Error("cannot listen on " + options_.listen + ": " + e.what());
  }
  try {
    pub_.bind(options_.publish);
  } catch (const zmq::error_t& e) {
    throw Error("cannot publish on " + options_.publish + ": " + e.what());
  }

  // What was bound, with "*" ports resolved: daemons are told these.
  bound_listen_ = router_.get(zmq::sockopt::last_endpoint);
  bound_publish_ = pub_.get(zmq::sockopt::last_endpoint);

  // The status first: a request the moment HTTP is up must not find it empty.
  PublishStatus();
  http_ = std::make_unique<HttpApi>(board_, *reader_, run.run_id, arch, options_.http_token,
                                    HttpTls{options_.http_cert, options_.http_key});
  http_->Start(options_.http);

  const auto [host, port] = ParseHostPort(options_.http);
  const std::string base = (options_.http_cert.empty() ? "http://" : "https://") +
                           (host.empty() || host == "0.0.0.0" ? std::string("127.0.0.1") : host) +
                           ":" + std::to_string(http_->port());
  log_ << "fedsgd-coordinator: run " << run.run_id
       << (resumed_ ? " resumed at round " + std::to_string(run.round) : std::string(" started"))
       << ", model " << arch.ToString() << " (" << n << " parameters), "
       << ToString(plan_.algorithm) << ", "
       << (root ? "rounds from the root at " + options_.upstream
                : std::to_string(settings.rounds) + " rounds")
       << ", waiting for " << settings.min_devices << " device(s)\n"
       << "fedsgd-coordinator: listening on " << listen_endpoint() << ", publishing on "
       << publish_endpoint() << ", database " << options_.db << "\n"
       << "fedsgd-coordinator: status: " << base << "/v1/status, dashboard: " << base << "/\n"
       << "fedsgd-coordinator: open files limit " << files.soft
       << (files.raised ? " (raised to the hard limit)" : "")
       << (files.error.empty()
               ? ""
               : " (could not raise it to " + std::to_string(files.hard) + ": " + files.error + ")")
       << ", at most " << options_.max_devices << " devices, " << options_.max_joins_per_second
       << " joins/s" << std::endl;
  if (!IsLoopbackHost(host) && options_.http_token.empty()) {
    log_ << "fedsgd-coordinator: WARNING: --insecure: HTTP on " << options_.http
         << " answers anyone without a token" << std::endl;
  }
  notifier_.Ready();
  notifier_.Status("run " + std::to_string(run.run_id) + ": waiting for devices");
}

std::string CoordinatorServer::listen_endpoint() const { return bound_listen_; }

std::string CoordinatorServer::publish_endpoint() const { return bound_publish_; }

void CoordinatorServer::Reply(const zmq::message_t& routing_id, wire::Message message) {
  Reply(routing_id, wire::Encode(std::move(message)));
}

void CoordinatorServer::Reply(const zmq::message_t& routing_id,
                              std::vector<zmq::message_t> frames) {
  // libzmq learns that a peer has read its queue (the high-water mark's
  // count) from commands a send processes at most once a millisecond; with
  // a queue of 4 that lag alone would refuse replies to a peer that reads.
  // Asking for ZMQ_EVENTS processes them now.
  (void)router_.get(zmq::sockopt::events);
  const bool sent = wire::SendFrames(router_, std::move(frames), &routing_id);
  if (!sent) {
    ++replies_dropped_;
    Warn("reply_dropped")
        << "fedsgd-coordinator: a reply could not be sent (the peer is gone or does not read)\n";
  }
}

std::ostream& CoordinatorServer::Warn(std::string_view key) {
  if (!warnings_.Allow(key, Now())) return discard_;
  return log_ << LogPriority(LogLevel::kWarning);
}

void CoordinatorServer::Housekeeping(double now) {
  for (const LogLimiter::Suppressed& held : warnings_.TakeSuppressed(now)) {
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: " << held.key << ": "
         << warnings_.Summary(held.count) << "\n";
  }
  monitor_->Poll();
  // The scans below visit every device: ten times a second is often enough
  // (silence is measured in seconds), however many messages the loop handles.
  if (now - last_sweep_ < 0.1) return;
  last_sweep_ = now;
  DeviceRegistry& devices = manager_->devices();
  for (const std::string& id : devices.ExpireSilent(now)) {
    Warn("device_silent") << "fedsgd-coordinator: device " << id << " went silent, marked offline, "
                          << devices.online() << " online\n";
  }
  const std::vector<std::string> forgotten = devices.Forget(now);
  if (!forgotten.empty()) {
    log_ << "fedsgd-coordinator: forgot " << forgotten.size() << " device(s) (" << forgotten.front()
         << (forgotten.size() > 1 ? ", ..." : "")
         << ") that never spoke after joining or stayed offline too long, " << devices.size()
         << " known\n";
  }
}

bool CoordinatorServer::RefuseJoin(const wire::Join& join, const zmq::message_t& routing_id,
                                   double now) {
  DeviceRegistry& devices = manager_->devices();
  std::optional<wire::Reject> refusal;
  // Checked first and whatever the join says: every join answered with a
  // Welcome costs a whole model on the wire.
  if (!joins_->Take(now)) {
    refusal = wire::Reject{wire::RejectReason::kRateLimited,
                           "more than " + Number(options_.max_joins_per_second) +
                               " joins per second; try again later"};
  } else if (join.samples > options_.max_samples_per_device) {
    refusal = wire::Reject{wire::RejectReason::kSamplesExceeded,
                           std::to_string(join.samples) + " samples declared, at most " +
                               std::to_string(options_.max_samples_per_device) +
                               " (--max-samples-per-device)"};
  } else if (!devices.Admits(join.device)) {
    refusal = wire::Reject{
        wire::RejectReason::kTooManyDevices,
        std::to_string(devices.size()) + " devices known, the limit " + "(--max-devices)"};
  }
  if (!refusal) return false;
  devices.CountReject(join.device, refusal->reason);
  const std::string reason(wire::ToString(refusal->reason));
  Warn(reason) << "fedsgd-coordinator: refused a join from " << join.device << ": " << reason
               << ": " << refusal->detail << "\n";
  Reply(routing_id, std::move(*refusal));
  return true;
}

void CoordinatorServer::HandleRequest(wire::BoundedFrames& request) {
  const auto t0 = Clock::now();
  std::vector<zmq::message_t>& frames = request.frames;
  if (frames.size() < 2) return;  // a routing id and nothing else: nothing to answer
  zmq::message_t routing_id = std::move(frames.front());
  frames.erase(frames.begin());
  std::size_t bytes = request.dropped_bytes;
  for (const auto& f : frames) bytes += f.size();
  bytes_in_ += bytes;
  const std::string address = PeerAddress(frames.back());
  const double now = Now();
  DeviceRegistry& devices = manager_->devices();

  // A message too broken to name its device is counted against the device
  // that last spoke on this connection, if any.
  const auto sender = [&] {
    const DeviceInfo* d = devices.FindByRoutingId(
        std::string(static_cast<const char*>(routing_id.data()), routing_id.size()));
    return d ? d->id : std::string();
  };

  wire::DecodeResult decoded =
      request.dropped_frames ? wire::DecodeResult{wire::DecodeError{
                                   wire::RejectReason::kMalformed,
                                   std::to_string(frames.size() + request.dropped_frames) +
                                       " frames, at most " + std::to_string(wire::kMaxFrames)}}
                             : wire::Decode(frames, UpdateLimits(), update_tensor_);
  frames_dropped_ += request.dropped_frames;
  if (!decoded.ok()) {
    const wire::DecodeError& e = decoded.error();
    const std::string device = sender();
    devices.CountReject(device, e.reason);
    Warn(wire::ToString(e.reason)) << "fedsgd-coordinator: dropped a bad message from "
                                   << (device.empty() ? "an unknown peer" : "device " + device)
                                   << " at " << (address.empty() ? "?" : address) << ": "
                                   << wire::ToString(e.reason) << ": " << e.detail << "\n";
    Reply(routing_id, wire::Reject{e.reason, e.detail});
    return;
  }
  wire::Message& message = decoded.message();
  if (!CheckIdentity(frames.back(), message, routing_id)) return;
  const auto unknown = [&](const std::string& id) {
    devices.CountReject(id, wire::RejectReason::kUnknownDevice);
    Reply(routing_id, wire::Reject{wire::RejectReason::kUnknownDevice,
                                   "device '" + id + "' has not joined; send a join first"});
  };

  if (auto* join = std::get_if<wire::Join>(&message)) {
    if (RefuseJoin(*join, routing_id, now)) return;
    const bool known = devices.Find(join->device) != nullptr;
    devices.Join(*join, std::string(static_cast<const char*>(routing_id.data()), routing_id.size()),
                 address, now);
    log_ << "fedsgd-coordinator: device " << join->device << (known ? " rejoined" : " joined")
         << " (" << join->samples << " samples, " << join->threads << " threads"
         << (address.empty() ? "" : ", from " + address) << "), " << devices.online()
         << " online\n";
    // The device that completes the quorum learns of the round in its
    // welcome: its SUB socket is not connected yet and would miss the
    // broadcast.
    if (ShouldOpenRound()) OpenRound();
    wire::Welcome w;
    w.device = join->device;
    w.run_id = std::to_string(manager_->run_id());
    w.plan = plan_.ToJson();
    w.model_version = manager_->version();
    w.round = manager_->open_round();
    // The bound endpoint, not the flag: with a "*" port only it names the
    // real port (a "0.0.0.0" host the daemon replaces with the one it used).
    w.publish_endpoint = publish_endpoint();
    w.heartbeat_ms = options_.heartbeat_ms;
    // Device selection: a device not invited to the open round gets no
    // weights now (a large fleet's joins would cost a model each); it
    // fetches them when invited.
    if (plan_.selection() && !manager_->Participates(join->device)) {
      w.encoded.encoding = broadcast_encoding_;
      w.encoded.count = 0;
      Reply(routing_id, std::move(w));
    } else {
      Reply(routing_id, WithWeights(std::move(w)));
    }
  } else if (auto* beat = std::get_if<wire::Heartbeat>(&message)) {
    DeviceInfo* d = devices.Touch(beat->device, now);
    if (!d) return unknown(beat->device);
    d->routing_id.assign(static_cast<const char*>(routing_id.data()), routing_id.size());
    d->active = true;
    d->state = beat->state;
    d->round = beat->round;
    d->samples_per_second = beat->samples_per_second;
    d->progress = beat->progress;
    if (beat->boards) d->boards = beat->boards;
    if (beat->loss > 0) d->last_loss = beat->loss;
    Reply(routing_id, HeartbeatAck(*d, *beat, now));
  } else if (auto* fetch = std::get_if<wire::FetchModel>(&message)) {
    DeviceInfo* d = devices.Touch(fetch->device, now);
    if (!d) return unknown(fetch->device);
    if (!d->fetches.Take(now)) {
      devices.CountReject(fetch->device, wire::RejectReason::kRateLimited);
      Warn("rate_limited") << "fedsgd-coordinator: refused a model fetch from " << fetch->device
                           << ": rate_limited\n";
      return Reply(routing_id, wire::Reject{wire::RejectReason::kRateLimited,
                                            "more than " + Number(DeviceInfo::kFetchesPerSecond) +
                                                " model fetches per second"});
    }
    wire::Model m{std::to_string(manager_->run_id()),
                  manager_->version(),
                  manager_->open_round(),
                  Done(),
                  {}};
    Reply(routing_id, WithWeights(std::move(m)));
  } else if (auto* update = std::get_if<wire::Update>(&message)) {
    if (uploads_) uploads_->Release(update->device);
    const auto refused = manager_->OnUpdate(*update, update_tensor_.values(), bytes, now);
    receive_seconds_ += Since(t0);
    if (DeviceInfo* d = devices.Find(update->device)) d->active = true;
    if (refused) {
      Warn(wire::ToString(refused->reason))
          << "fedsgd-coordinator: refused an update from " << update->device << " for round "
          << update->round << ": " << wire::ToString(refused->reason) << ": " << refused->detail
          << "\n";
      Reply(routing_id, *refused);
    } else {
      ++updates_accepted_;
      Reply(routing_id, wire::Ack{manager_->open_round(), manager_->version(), "accepted"});
    }
  } else {
    devices.CountReject(sender(), wire::RejectReason::kUnknownKind);
    Reply(routing_id, wire::Reject{wire::RejectReason::kUnknownKind,
                                   std::string(wire::KindName(message)) + " is not a request"});
  }
}

wire::Ack CoordinatorServer::HeartbeatAck(DeviceInfo& d, const wire::Heartbeat& beat, double now) {
  wire::Ack ack{manager_->open_round(), manager_->version(), ""};
  const bool participates = manager_->Participates(d.id);
  if (plan_.selection() && ack.round) ack.selected = participates;
  // Pace steering: a device busy with the open round reports at the base
  // interval; the others come back as often as the fleet's size allows.
  const RoundSettings& settings = manager_->settings();
  const bool busy = participates && (beat.state != "idle" || beat.round < ack.round);
  const int base = options_.heartbeat_ms, before = d.heartbeat_ms;
  d.heartbeat_ms =
      busy ? base
           : IdleHeartbeatMs(base, manager_->devices().online(), settings.max_heartbeat_rate, d.id);
  // Said whenever it is not (or was not) the base, and always with selection.
  if (plan_.selection() || d.heartbeat_ms != base || (before != 0 && before != base)) {
    ack.heartbeat_ms = d.heartbeat_ms;
  }
  if (uploads_ && beat.state == "sending" && participates && beat.round == ack.round) {
    const std::size_t target = manager_->quorum_target(), accepted = manager_->accepted();
    const std::size_t invited = manager_->participants();
    ack.upload = uploads_->Grant(d.id, now, target > accepted ? target - accepted : 0);
    if (!*ack.upload) {
      ack.retry_ms =
          UploadRetryMs(invited > accepted ? invited - accepted : 0, uploads_->slots(), d.id);
    }
  }
  return ack;
}

wire::Limits CoordinatorServer::UpdateLimits() const {
  // An update in another encoding than the plan's is refused (bad_field):
  // it would mean a daemon misread the plan. Decode expands the plan's
  // encoding to float32, so nothing after it knows about codecs.
  wire::Limits limits{manager_->trainable()};
  limits.update_encoding = update_encoding_;
  return limits;
}

nlohmann::json CoordinatorServer::Run(const std::atomic<bool>& stop, std::atomic<bool>* reload) {
  const auto run_start = Clock::now();
  std::vector<zmq::pollitem_t> items = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
  auto last_status = Clock::now();
  bool stopped = false;
  while (!Done()) {
    if (stop.load()) {
      stopped = true;
      break;
    }
    // A gateway also waits on its root, whose sockets are not in `items`.
    wire::Poll(items, std::chrono::milliseconds(gateway() ? 10 : 50));
    if (gateway()) GatewayTick();
    notifier_.Watchdog();
    ApplyKeyChanges(reload);
    // Drain what is waiting, but bounded, so a flood cannot starve the rounds.
    for (int i = 0; i < 1000; ++i) {
      if (!wire::ReceiveBounded(router_, 1 + wire::kMaxFrames, request_,
                                zmq::recv_flags::dontwait)) {
        break;
      }
      HandleRequest(request_);
      request_.frames.clear();  // zmq's buffers go now, the vector's capacity stays
      // A full asynchronous buffer is applied at once: the updates behind
      // it in the queue go into the next version's buffer.
      if (plan_.async() && manager_->ShouldClose(Now())) CloseRound();
    }
    const double now = Now();
    Housekeeping(now);
    if (manager_->ShouldClose(now)) CloseRound();
    if (manager_->NeedsRebroadcast(now)) {
      log_ << "fedsgd-coordinator: round " << manager_->open_round()
           << " reached its deadline with too few updates; waiting longer" << std::endl;
      Broadcast(false);
    }
    if (ShouldOpenRound()) OpenRound();
    if (Since(last_status) > 0.25) {
      PublishStatus();
      last_status = Clock::now();
    }
  }
  if (Done()) {
    // PUB is fire-and-forget: repeat the final model for daemons that were
    // busy or reconnecting, and keep answering requests meanwhile.
    for (int i = 0; i < 5 && !stop.load(); ++i) {
      Broadcast(true);
      wire::Poll(items, std::chrono::milliseconds(100));
      while (wire::ReceiveBounded(router_, 1 + wire::kMaxFrames, request_,
                                  zmq::recv_flags::dontwait)) {
        HandleRequest(request_);
        request_.frames.clear();
      }
    }
  }
  notifier_.Stopping();
  PublishStatus();
  nlohmann::json summary = {
      {"run_id", manager_->run_id()},
      {"round", manager_->version()},
      {"rounds", gateway() ? nlohmann::json() : nlohmann::json(manager_->settings().rounds)},
      {"done", Done()},
      {"stopped", stopped},
      {"seconds", Since(run_start)},
      {"test_accuracy", nullptr},
      {"test_loss", nullptr},
      {"updates_accepted", updates_accepted_},
      {"updates_rejected", manager_->devices().rejected_total()},
      {"bytes_out", bytes_out_},
      {"models_sent", models_sent_},
      {"database", options_.db}};
  if (last_round_ && last_round_->test_accuracy)
    summary["test_accuracy"] = *last_round_->test_accuracy;
  if (last_round_ && last_round_->test_loss) summary["test_loss"] = *last_round_->test_loss;
  return summary;
}

}  // namespace fedsgd
