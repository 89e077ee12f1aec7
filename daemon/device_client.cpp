// DeviceClient (see device_client.h and docs/protocol.md).
#include "device_client.h"

#include <algorithm>
#include <functional>
#include <thread>

#include "fedsgd/curve_socket.h"
#include "fedsgd/endpoint.h"
#include "fedsgd/socket_options.h"
#include "log_text.h"

namespace fedsgd {
DeviceClient::DeviceClient(DaemonOptions options, const Dataset& shard, std::ostream& log,
                           ClientTiming timing)
    : options_(std::move(options)),
      shard_(shard),
      attack_(SimulatedAttack::Parse(options_.simulate_attack)),
      attack_rng_(options_.seed ^ std::hash<std::string>{}(options_.id)),
      // A stream of its own ("codec"), so fp32 runs draw nothing new.
      compressor_(options_.seed ^ std::hash<std::string>{}(options_.id) ^ 0x636f646563ull),
      log_(log),
      timing_(timing),
      mode_(ParseTrainMode(options_.mode)),
      threads_(std::clamp(options_.threads > 0
                              ? options_.threads
                              : static_cast<int>(std::thread::hardware_concurrency()),
                          1, 4096)),
      // Seeded per device, so a fleet that lost its coordinator spreads out.
      backoff_(timing_.backoff_initial, timing_.backoff_cap, timing_.backoff_jitter,
               std::hash<std::string>{}(options_.id) ^ options_.seed),
      start_(std::chrono::steady_clock::now()) {
  if (!options_.key.empty()) {
    curve_keys_ = curve::LoadSecretKey(options_.key);
    coordinator_public_key_ = curve::LoadPublicKey(options_.coordinator_key);
  }
}

DeviceClient::~DeviceClient() { CancelTraining(); }

double DeviceClient::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void DeviceClient::Log(const std::string& line, LogLevel level) {
  log_ << LogPriority(level) << options_.id << ": " << line << std::endl;
}

void DeviceClient::DropBad(const std::string& what) {
  ++bad_messages_;
  Warn("dropped", "dropped " + what);
}

void DeviceClient::Warn(std::string_view key, const std::string& line) {
  if (warnings_.Allow(key, Now())) Log(line, LogLevel::kWarning);
}

// ---------------------------------------------------------------- sockets

void DeviceClient::ConfigureSocket(zmq::socket_t& socket) {
  socket.set(zmq::sockopt::linger, 0);
  if (curve_keys_) curve::MakeClient(socket, *curve_keys_, coordinator_public_key_);
}

void DeviceClient::OpenDealer() {
  dealer_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  ConfigureSocket(*dealer_);
  ApplySocketLimits(*dealer_, ClientReceiveLimits());
  // Queue nothing for a coordinator that is not there: a send then fails at
  // once instead of piling up stale heartbeats for when it comes back.
  dealer_->set(zmq::sockopt::immediate, 1);
  dealer_->connect(options_.coordinator);
}

void DeviceClient::Subscribe() {
  try {
    sub_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::sub);
    ConfigureSocket(*sub_);
    ApplySocketLimits(*sub_, ClientReceiveLimits());
    sub_->set(zmq::sockopt::subscribe, "");
    sub_->connect(publish_endpoint_);
  } catch (const zmq::error_t& e) {
    sub_.reset();
    Log("cannot subscribe to " + publish_endpoint_ + ": " + e.what() +
            "; will fetch models instead",
        LogLevel::kWarning);
  }
}

void DeviceClient::Connect() {
  OpenDealer();
  reconnect_at_ = -1;
  wake_at_ = -1;
  wake_beat_pending_ = false;
  joined_ = false;
  join_sent_at_ = -1;
  fetch_sent_at_ = -1;
  last_reply_ = Now();
}

void DeviceClient::Disconnect() {
  sub_.reset();
  dealer_.reset();
  joined_ = false;
  wake_at_ = -1;
}

void DeviceClient::MaybeDoze(const wire::Ack& a) {
  if (options_.idle_disconnect <= 0 || !Selective() || !joined_ || finished_ || !dealer_) return;
  if (heartbeat_ms_ < options_.idle_disconnect * 1000) return;
  // Anything under way needs the connection: training, an update waiting
  // for a slot or for its answer, a model asked for, or an invitation to a
  // round not trained yet.
  if (job_ || awaiting_upload_ || update_in_flight_ || unsent_ || fetch_sent_at_ >= 0) return;
  if (a.round && selected_round_ == a.round && a.round > last_trained_round_) return;
  const double now = Now();
  wake_at_ = std::max(now, last_heartbeat_ + heartbeat_ms_ / 1000.0);
  sub_.reset();
  dealer_.reset();
  ++dozes_;
  if (!doze_logged_) {
    Log(
        Format("idle, next heartbeat in %.1f s: closing the connections until each next "
               "heartbeat while idle (--idle-disconnect %g)",
               wake_at_ - now, options_.idle_disconnect));
    doze_logged_ = true;
  }
}

void DeviceClient::Wake() {
  // Still joined: the coordinator knows this device by its id and answers
  // the new connection (docs/protocol.md, pace steering).
  wake_at_ = -1;
  OpenDealer();
  Subscribe();
  last_reply_ = Now();
  wake_beat_pending_ = true;
}

void DeviceClient::ReconnectLater(double delay) {
  Disconnect();
  reconnect_at_ = Now() + delay;
  ++reconnects_;
}

void DeviceClient::RejoinNow() {
  joined_ = false;
  join_sent_at_ = -1;
}

bool DeviceClient::Send(wire::Message message) {
  if (!dealer_) return false;
  try {
    return wire::Send(*dealer_, std::move(message));
  } catch (const zmq::error_t& e) {
    Log(std::string("send failed: ") + e.what(), LogLevel::kWarning);
    return false;
  }
}

std::string DeviceClient::PublishEndpoint(const std::string& announced) const {
  return ResolvePublishEndpoint(announced, options_.coordinator);
}

// ---------------------------------------------------------------- messages

void DeviceClient::Receive() {
  // Either handler may close the sockets (a plan that does not fit), hence
  // the checks on every turn.
  while (dealer_) {
    auto frames = wire::ReceiveFrames(*dealer_, zmq::recv_flags::dontwait);
    if (!frames) break;
    HandleReply(*frames);
  }
  while (sub_) {
    auto frames = wire::ReceiveFrames(*sub_, zmq::recv_flags::dontwait);
    if (!frames) break;
    HandleBroadcast(*frames);
  }
}

void DeviceClient::HandleReply(std::vector<zmq::message_t>& frames) {
  last_reply_ = Now();  // even a bad reply shows the coordinator is there
  // Before the welcome the model's size is unknown; the welcome's is checked
  // against its plan.
  wire::DecodeResult d = wire::Decode(frames, ModelLimits());
  if (!d.ok()) {
    return DropBad("a bad reply from the coordinator: " +
                   std::string(wire::ToString(d.error().reason)) + ": " + d.error().detail);
  }
  wire::Message& msg = d.message();
  if (auto* w = std::get_if<wire::Welcome>(&msg)) {
    HandleWelcome(*w);
  } else if (auto* m = std::get_if<wire::Model>(&msg)) {
    fetch_sent_at_ = -1;
    HandleModel(*m);
  } else if (auto* a = std::get_if<wire::Ack>(&msg)) {
    if (a->detail == "accepted") update_in_flight_ = false;
    HandleAck(*a);
    MaybeDoze(*a);
  } else if (auto* r = std::get_if<wire::Reject>(&msg)) {
    // Whatever was refused, an update is no longer waiting for its answer.
    update_in_flight_ = false;
    TrainNextAsync();
    if (r->reason == wire::RejectReason::kUnknownDevice) {
      Log("the coordinator does not know this device (restarted?); joining again");
      RejoinNow();
    } else {
      Warn(wire::ToString(r->reason),
           "the coordinator refused a message: " + std::string(wire::ToString(r->reason)) + ": " +
               r->detail);
    }
  } else {
    DropBad("an unexpected '" + std::string(wire::KindName(msg)) + "' from the coordinator");
  }
}

void DeviceClient::HandleBroadcast(std::vector<zmq::message_t>& frames) {
  if (!joined_ || !plan_) return;  // the welcome will carry the current model
  wire::DecodeResult d = wire::Decode(frames, ModelLimits());
  if (!d.ok()) {
    return DropBad("a bad broadcast: " + std::string(wire::ToString(d.error().reason)) + ": " +
                   d.error().detail);
  }
  if (auto* m = std::get_if<wire::Model>(&d.message())) {
    HandleModel(*m);
  } else {
    DropBad("an unexpected '" + std::string(wire::KindName(d.message())) + "' broadcast");
  }
}

void DeviceClient::HandleModel(wire::Model& m) {
  if (!joined_ || !plan_) return;
  if (m.run_id != run_id_) {
    Log("the coordinator moved to run " + m.run_id + "; joining it");
    CancelTraining();
    RejoinNow();
    return;
  }
  if (m.model_version < model_version_) return;  // a late reply; this device is ahead
  if (m.model_version > model_version_ || !params_) {
    model_version_ = m.model_version;
    params_ = ShareParams(std::move(m.params));
    // Synchronous: training from an older version would only earn a
    // stale_round. Asynchronous: it is worth finishing (the coordinator
    // takes it, weighted by its staleness); the next job starts from here.
    if (job_ && job_->model_version() < model_version_ && !Async()) CancelTraining();
  }
  if (m.final) {
    if (!finished_) {
      Log("run " + run_id_ + " finished at model version " + std::to_string(model_version_));
      notifier_.Status("run " + run_id_ + " finished; waiting for a new run");
    }
    finished_ = true;
    CancelTraining();
    return;
  }
  announced_round_ = m.round;
  if (Async()) return TrainNextAsync();
  if (m.round == 0 || m.round <= last_trained_round_) return;
  if (job_ && job_->round() == m.round) return;           // already on it
  if (Selective() && m.round != selected_round_) return;  // the invitation starts it
  StartTraining(m.round);
}

void DeviceClient::HandleAck(const wire::Ack& a) {
  if (!joined_ || !plan_) return;
  const double now = Now();
  if (a.heartbeat_ms) heartbeat_ms_ = a.heartbeat_ms;  // pace steering
  if (a.selected && *a.selected && selected_round_ != a.round) {
    selected_round_ = a.round;
    Log("round " + std::to_string(a.round) + ": selected to take part");
  } else if (a.selected && !*a.selected && unselected_round_ != a.round) {
    unselected_round_ = a.round;
    Log("round " + std::to_string(a.round) + ": not selected" +
            Format("; next heartbeat in %.1f s", heartbeat_ms_ / 1000.0),
        LogLevel::kInfo);
  }
  if (awaiting_upload_) {
    if (a.round != awaiting_upload_->round || (a.selected && !*a.selected)) {
      Log("round " + std::to_string(awaiting_upload_->round) +
          ": closed before this device could send its update; dropped");
      awaiting_upload_.reset();
    } else if (a.upload && *a.upload) {
      TrainingResult r = std::move(*awaiting_upload_);
      awaiting_upload_.reset();
      SendUpdate(std::move(r), /*granted=*/true);
    } else if (a.upload) {
      upload_ask_at_ = now + a.retry_ms / 1000.0;
    }
  }
  if (a.model_version == model_version_) announced_round_ = a.round;
  // Behind, or welcomed without weights (device selection) and now invited.
  const bool need_model =
      a.model_version > model_version_ || (!params_ && a.selected && *a.selected);
  if (need_model) {
    // An invitation may outrun the round's broadcast: wait for that first
    // (unless there are no weights at all to train from).
    if (a.detail == "invited" && params_) return;
    // A broadcast was missed: ask for the model, once per few heartbeats.
    const double patience = std::max(1.0, 3.0 * heartbeat_ms_ / 1000.0);
    if (fetch_sent_at_ < 0 || now - fetch_sent_at_ > patience) {
      if (Send(wire::FetchModel{options_.id})) {
        fetch_sent_at_ = now;
        Log("missed model version " + std::to_string(a.model_version) + "; fetching it");
      }
    }
  } else if (Async()) {
    TrainNextAsync();
  } else if (a.model_version == model_version_ && a.round > last_trained_round_ &&
             !(job_ && job_->round() == a.round) && (!Selective() || selected_round_ == a.round)) {
    // Only the round's announcement was missed: the model is current.
    StartTraining(a.round);
  }
}

// ---------------------------------------------------------------- the loop

void DeviceClient::Tick() {
  const double now = Now();
  const double beat = heartbeat_ms_ / 1000.0;
  if (!joined_) {
    if (join_sent_at_ < 0 || now - join_sent_at_ > std::max(1.0, beat)) {
      if (Send(wire::Join{options_.id, threads_, shard_.size(), "fedsgd-daemon " FEDSGD_VERSION})) {
        join_sent_at_ = now;
      }
    }
  } else if (update_in_flight_ && now - update_sent_at_ > std::max(1.0, 3.0 * beat)) {
    update_in_flight_ = false;  // its answer was lost (a reply the coordinator could not send)
    TrainNextAsync();
  } else if (awaiting_upload_ && now >= upload_ask_at_) {
    // Flow control: "sending" asks for an upload slot; the Ack grants one
    // or says when to ask again (and, if the reply is lost, ask anyway).
    wire::Heartbeat h{
        options_.id,        "sending", awaiting_upload_->round, Finite(last_samples_per_second_),
        Finite(last_loss_), 1.0};
    Send(std::move(h));
    last_heartbeat_ = now;
    upload_ask_at_ = now + std::max(1.0, 3.0 * beat);
  } else if (now - last_heartbeat_ >= beat) {
    wire::Heartbeat h{options_.id,
                      job_ ? "training" : "idle",
                      job_ ? job_->round() : last_trained_round_,
                      Finite(job_ ? job_->samples_per_second() : last_samples_per_second_),
                      Finite(last_loss_),
                      job_ ? job_->progress() : 0.0};
    // Right after a wake the new connection may not be up yet (a send
    // fails at once, ZMQ_IMMEDIATE): then it is tried again on the next turn.
    const bool sent = Send(std::move(h));
    if (sent || !wake_beat_pending_) last_heartbeat_ = now;
    if (sent) wake_beat_pending_ = false;
  }
  SaveNewestModel(false);
  PublishNewestModel();
  const double silence = std::max(timing_.min_silence, 3.0 * beat);
  if (now - last_reply_ > silence) {
    const double delay = backoff_.Next();
    Log(Format("coordinator silent for %.1f s, reconnecting in %.2f s", now - last_reply_, delay),
        LogLevel::kWarning);
    if (!ready_ && !curve_hint_logged_) {
      // A CURVE handshake the coordinator refuses looks exactly like silence.
      Log("no reply: if the coordinator uses CURVE, check --key/--coordinator-key (and that "
          "this device's public key is in its --authorized-keys as " +
              options_.id + ".key)",
          LogLevel::kWarning);
      curve_hint_logged_ = true;
    }
    notifier_.Status("coordinator " + options_.coordinator + " unreachable, retrying");
    ReconnectLater(delay);
  }
}

int DeviceClient::Run(const std::atomic<bool>& stop) {
  if (attack_.active()) {
    Log("SIMULATED ATTACKER: --simulate-attack " + attack_.ToString() +
            ": this device sends deliberately bad updates (a simulation aid; never in production)",
        LogLevel::kWarning);
  }
  if (options_.slowdown > 1) {
    Log(Format("SIMULATED STRAGGLER: --slowdown %g: every mini-batch takes %g times as long (a "
               "simulation aid)",
               options_.slowdown, options_.slowdown),
        LogLevel::kWarning);
  }
  StartInference();
  Connect();
  Log("connecting to " + options_.coordinator + " with " + std::to_string(shard_.size()) +
      " samples, " + std::to_string(threads_) + " thread(s), " + ToString(mode_));
  while (!stop.load()) {
    notifier_.Watchdog();
    if (reconnect_at_ >= 0) {
      // Sockets closed: wait out the backoff, letting training finish.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (job_ && job_->done()) FinishTraining();
      if (reconnect_at_ >= 0 && Now() >= reconnect_at_) Connect();
      continue;
    }
    if (wake_at_ >= 0) {
      // Dozing (--idle-disconnect): no sockets until the next heartbeat.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (Now() >= wake_at_) Wake();
      continue;
    }
    std::vector<zmq::pollitem_t> items = {{dealer_->handle(), 0, ZMQ_POLLIN, 0}};
    if (sub_) items.push_back({sub_->handle(), 0, ZMQ_POLLIN, 0});
    wire::Poll(items, std::chrono::milliseconds(50));
    Receive();
    for (const LogLimiter::Suppressed& held : warnings_.TakeSuppressed(Now())) {
      Log(held.key + ": " + warnings_.Summary(held.count), LogLevel::kWarning);
    }
    if (finished_ && options_.exit_when_done) {
      Log("exiting: the run is finished (--exit-when-done)");
      break;
    }
    if (job_ && job_->done()) FinishTraining();
    if (reconnect_at_ < 0 && wake_at_ < 0) Tick();
  }
  CancelTraining();
  SaveNewestModel(true);
  inference_.reset();
  notifier_.Stopping();
  if (stop.load()) Log("stopped");
  return 0;
}

}  // namespace fedsgd
