// CoordinatorServer: the message loop and its requests of docs/protocol.md
// (see coordinator_server.h); start-up is in coordinator_startup.cpp, rounds
// in coordinator_rounds.cpp.
#include "coordinator_server.h"

#include <algorithm>
#include <cstdio>

#include "fedsgd/error.h"
#include "wall_clock.h"

namespace fedsgd {
namespace {

using Clock = std::chrono::steady_clock;

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

double CoordinatorServer::Now() const { return Since(start_); }

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
  // Nothing reads the PUB socket and it sends once a round, and libzmq frees
  // a closed subscriber's connection (its pipes and buffers, ~45 KB) only
  // when the socket's own thread processes its commands, which a send or
  // this does: without it, subscribers that come and go (daemons that
  // reconnect, or doze with --idle-disconnect) pile up until the next round.
  (void)pub_.get(zmq::sockopt::events);
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

void CoordinatorServer::LingerAfterTheRun(const std::atomic<bool>& stop,
                                          std::vector<zmq::pollitem_t>& items) {
  // PUB is fire-and-forget: the final model is repeated for daemons that
  // were busy or reconnecting, for half a second. Devices that pace steering
  // sent away for longer (and those that closed their connection until then,
  // --idle-disconnect) hear of the end only when they check in: until all
  // online devices have, the coordinator stays up for the longest interval
  // it gave them (x 1.1, its jitter; at most kMaxLingerSeconds), answering.
  const DeviceRegistry& devices = manager_->devices();
  const double ended = Now();
  int longest_ms = options_.heartbeat_ms;
  for (const auto& [id, d] : devices.devices()) {
    if (d.online) longest_ms = std::max(longest_ms, d.heartbeat_ms);
  }
  double until = ended + 0.5;
  if (longest_ms > options_.heartbeat_ms) {
    until = ended + std::min(kMaxLingerSeconds, 1.1 * longest_ms / 1000.0);
    log_ << "fedsgd-coordinator: staying up to " << Number(until - ended)
         << " s for the devices told to check in later to hear that the run is finished"
         << std::endl;
  }
  bool all_heard = false;
  for (int i = 0; !stop.load(); ++i) {
    if (i < 5) Broadcast(true);
    wire::Poll(items, std::chrono::milliseconds(100));
    while (
        wire::ReceiveBounded(router_, 1 + wire::kMaxFrames, request_, zmq::recv_flags::dontwait)) {
      HandleRequest(request_);
      request_.frames.clear();
    }
    monitor_->Poll();  // the devices leaving now
    notifier_.Watchdog();  // up to a minute: systemd's WatchdogSec is 60
    const double now = Now();
    if (!all_heard) {
      all_heard = std::none_of(
          devices.devices().begin(), devices.devices().end(),
          [&](const auto& entry) { return entry.second.online && entry.second.last_seen < ended; });
      // Half a second more for the model fetches their Acks bring.
      if (all_heard) until = std::min(until, std::max(ended, now) + 0.5);
    }
    if (i >= 4 && now >= until) break;
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
  if (Done()) LingerAfterTheRun(stop, items);
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
