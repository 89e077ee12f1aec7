// DeviceClient (see device_client.h and docs/protocol.md).
#include "device_client.h"

#include <cstdio>
#include <thread>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

std::string Format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

}  // namespace

DeviceClient::DeviceClient(DaemonOptions options, const Dataset& shard, std::ostream& log)
    : options_(std::move(options)),
      shard_(shard),
      log_(log),
      mode_(ParseTrainMode(options_.mode)),
      threads_(options_.threads > 0
                   ? options_.threads
                   : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
      backoff_(0.25, 8.0, 0.25, std::hash<std::string>{}(options_.id) ^ options_.seed),
      start_(Clock::now()) {}

DeviceClient::~DeviceClient() { job_.reset(); }

double DeviceClient::Now() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

void DeviceClient::Log(const std::string& line, LogLevel level) {
  log_ << LogPriority(level) << options_.id << ": " << line << std::endl;
}

void DeviceClient::Connect() {
  dealer_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  dealer_->set(zmq::sockopt::linger, 0);
  // Queue nothing for a coordinator that is not there: a send then fails at
  // once instead of piling up stale heartbeats for when it comes back.
  dealer_->set(zmq::sockopt::immediate, 1);
  dealer_->connect(options_.coordinator);
  joined_ = false;
  join_sent_at_ = -1;
  last_reply_ = Now();
}

void DeviceClient::Disconnect() {
  sub_.reset();
  dealer_.reset();
  joined_ = false;
}

bool DeviceClient::Send(wire::Message message) {
  if (!dealer_) return false;
  try {
    return wire::Send(*dealer_, std::move(message));
  } catch (const zmq::error_t& e) {
    Log(std::string("send failed: ") + e.what());
    return false;
  }
}

std::string DeviceClient::PublishEndpoint(const std::string& announced) const {
  // tcp://*:P and tcp://0.0.0.0:P mean "the host you reached me on".
  for (const std::string wildcard : {"tcp://*:", "tcp://0.0.0.0:"}) {
    if (announced.rfind(wildcard, 0) != 0) continue;
    const std::string& c = options_.coordinator;
    const std::size_t colon = c.rfind(':');
    if (c.rfind("tcp://", 0) == 0 && colon != std::string::npos && colon > 6) {
      return c.substr(0, colon + 1) + announced.substr(wildcard.size());
    }
  }
  return announced;
}

void DeviceClient::HandleWelcome(wire::Welcome& w) {
  try {
    Plan plan = Plan::FromJson(w.plan);
    const Architecture arch = plan.architecture();
    if (arch.input_size() != shard_.num_features) {
      throw Error("model " + arch.ToString() + " expects " + std::to_string(arch.input_size()) +
                  " features but this device's data has " + std::to_string(shard_.num_features));
    }
    if (arch.num_classes() > 0 && shard_.num_classes > arch.num_classes()) {
      throw Error("model " + arch.ToString() + " has " + std::to_string(arch.num_classes()) +
                  " classes but this device's data has " + std::to_string(shard_.num_classes));
    }
    if (w.params.size() != arch.ParameterCount())
      throw Error("the welcome's model has the wrong size");
    plan_ = std::move(plan);
    plan_unusable_ = false;
  } catch (const Error& e) {
    if (!plan_unusable_)
      Log(std::string("cannot take part in this run: ") + e.what(), LogLevel::kError);
    plan_unusable_ = true;
  }
  joined_ = true;
  ++joins_;
  backoff_.Reset();
  run_id_ = w.run_id;
  heartbeat_ms_ = w.heartbeat_ms;
  params_ = std::move(w.params);
  model_version_ = w.model_version;
  // A (re)started coordinator remembers nothing of its open round: whatever
  // this device sent before the welcome may be lost, so every round open
  // from now on is trained again. A duplicate is refused, never counted twice.
  last_trained_round_ = 0;
  finished_ = false;

  const std::string endpoint = PublishEndpoint(w.publish_endpoint);
  try {
    sub_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::sub);
    sub_->set(zmq::sockopt::linger, 0);
    sub_->set(zmq::sockopt::subscribe, "");
    sub_->connect(endpoint);
  } catch (const zmq::error_t& e) {
    sub_.reset();
    Log("cannot subscribe to " + endpoint + ": " + e.what() + "; will fetch models instead");
  }
  Log("joined run " + run_id_ + " at model version " + std::to_string(model_version_) +
      (w.round ? " (round " + std::to_string(w.round) + " open)" : " (no round open)"));
  if (!ready_) {
    notifier_.Ready();
    ready_ = true;
  }
  notifier_.Status("joined run " + run_id_ + " at " + options_.coordinator);
  if (w.round > 0 && w.round > last_trained_round_ && !plan_unusable_) StartTraining(w.round);
  // A SUB socket takes a moment to subscribe (ZeroMQ's slow joiner), so a
  // round opened right now may not reach it: heartbeat soon, and the Ack
  // tells of any open round.
  last_heartbeat_ = Now() - heartbeat_ms_ / 1000.0 + 0.2;
}

void DeviceClient::HandleModel(wire::Model& m, const char* via) {
  if (!joined_ || !plan_) return;
  if (m.run_id != run_id_) {
    Log("the coordinator moved to run " + m.run_id + "; joining it");
    job_.reset();
    joined_ = false;
    join_sent_at_ = -1;
    return;
  }
  fetch_pending_ = false;
  if (m.model_version >= model_version_) {
    model_version_ = m.model_version;
    params_ = std::move(m.params);
  }
  if (m.final) {
    if (!finished_)
      Log("run " + run_id_ + " finished at model version " + std::to_string(model_version_));
    finished_ = true;
    job_.reset();
    return;
  }
  if (m.round == 0 || m.round <= last_trained_round_ || m.model_version != model_version_) return;
  if (job_ && job_->round() == m.round) return;  // already on it
  (void)via;
  StartTraining(m.round);
}

void DeviceClient::HandleReply(std::vector<zmq::message_t>& frames) {
  last_reply_ = Now();
  const std::size_t expected = plan_ && joined_ ? params_.size() : 0;
  wire::DecodeResult d = wire::Decode(frames, wire::Limits{expected});
  if (!d.ok()) {
    Log("dropped a bad message from the coordinator: " +
        std::string(wire::ToString(d.error().reason)) + ": " + d.error().detail);
    return;
  }
  wire::Message& msg = d.message();
  if (auto* w = std::get_if<wire::Welcome>(&msg)) {
    HandleWelcome(*w);
  } else if (auto* m = std::get_if<wire::Model>(&msg)) {
    HandleModel(*m, "fetch");
  } else if (auto* a = std::get_if<wire::Ack>(&msg)) {
    if (!joined_ || plan_unusable_) return;
    if (a->model_version > model_version_ && !fetch_pending_) {
      // A broadcast was missed: ask for the model.
      fetch_pending_ = Send(wire::FetchModel{options_.id});
    } else if (a->round > last_trained_round_ && a->model_version == model_version_ &&
               !(job_ && job_->round() == a->round)) {
      StartTraining(a->round);  // the round's announcement was missed, the model is current
    }
  } else if (auto* r = std::get_if<wire::Reject>(&msg)) {
    if (r->reason == wire::RejectReason::kUnknownDevice) {
      Log("the coordinator does not know this device (restarted?); joining again");
      joined_ = false;
      join_sent_at_ = -1;
    } else {
      Log("the coordinator refused a message: " + std::string(wire::ToString(r->reason)) + ": " +
          r->detail);
    }
  }
}

void DeviceClient::StartTraining(std::uint64_t round) {
  if (!plan_ || plan_unusable_) return;
  job_.reset();  // cancels an older round's training
  job_ = std::make_unique<TrainingJob>(*plan_, shard_, params_, round, model_version_, threads_,
                                       mode_, options_.seed);
}

void DeviceClient::FinishTraining() {
  TrainingResult r = job_->TakeResult();
  job_.reset();
  if (!r.error.empty()) {
    Log("training failed: " + r.error, LogLevel::kError);
    plan_unusable_ = true;
    return;
  }
  if (r.cancelled) return;
  last_trained_round_ = r.round;
  last_loss_ = r.loss;
  last_samples_per_second_ = r.samples_per_second;
  const std::size_t bytes = r.payload.size() * sizeof(float);
  wire::Update u{options_.id, r.round, r.model_version, r.samples,
                 r.loss,      r.kind,  r.seconds,       std::move(r.payload)};
  const bool sent = Send(std::move(u));
  if (sent) ++updates_sent_;
  Log("round " + std::to_string(r.round) + ": trained " + std::to_string(r.samples) + " samples" +
      Format(" in %.2f s (loss %.4f, %.0f samples/s), ", r.seconds, r.loss, r.samples_per_second) +
      (sent ? "update sent (" + std::to_string(bytes) + " bytes)"
            : "update NOT sent (coordinator away)"));
}

int DeviceClient::Run(const std::atomic<bool>& stop) {
  Connect();
  Log("connecting to " + options_.coordinator + " with " + std::to_string(shard_.size()) +
      " samples, " + std::to_string(threads_) + " thread(s), " + ToString(mode_));
  while (!stop.load()) {
    std::vector<zmq::pollitem_t> items = {{dealer_->handle(), 0, ZMQ_POLLIN, 0}};
    if (sub_) items.push_back({sub_->handle(), 0, ZMQ_POLLIN, 0});
    wire::Poll(items, std::chrono::milliseconds(50));
    notifier_.Watchdog();
    while (dealer_) {
      auto frames = wire::ReceiveFrames(*dealer_, zmq::recv_flags::dontwait);
      if (!frames) break;
      HandleReply(*frames);
    }
    while (sub_) {
      auto frames = wire::ReceiveFrames(*sub_, zmq::recv_flags::dontwait);
      if (!frames) break;
      wire::DecodeResult d = wire::Decode(*frames, wire::Limits{params_.size()});
      if (!d.ok()) {
        Log("dropped a bad broadcast: " + d.error().detail);
        continue;
      }
      if (auto* m = std::get_if<wire::Model>(&d.message())) HandleModel(*m, "broadcast");
    }
    if (finished_ && options_.exit_when_done) return 0;
    if (job_ && job_->done()) FinishTraining();

    const double now = Now();
    const double beat = heartbeat_ms_ / 1000.0;
    if (!joined_) {
      if (join_sent_at_ < 0 || now - join_sent_at_ > 1.0) {
        if (Send(wire::Join{options_.id, threads_, shard_.size(),
                            "fedsgd-daemon " FEDSGD_VERSION})) {
          join_sent_at_ = now;
        }
      }
    } else if (now - last_heartbeat_ >= beat) {
      wire::Heartbeat h{options_.id,
                        job_ ? "training" : "idle",
                        job_ ? job_->round() : last_trained_round_,
                        last_samples_per_second_,
                        last_loss_,
                        job_ ? job_->progress() : 0.0};
      Send(std::move(h));
      last_heartbeat_ = now;
    }
    const double silence = std::max(3.0, 3.0 * beat);
    if (now - last_reply_ > silence) {
      const double delay = backoff_.Next();
      Log(Format("coordinator silent for %.1f s, reconnecting in %.2f s", now - last_reply_, delay),
          LogLevel::kWarning);
      notifier_.Status("coordinator " + options_.coordinator + " unreachable, retrying");
      Disconnect();
      const auto until = Clock::now() + std::chrono::duration<double>(delay);
      while (!stop.load() && Clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        notifier_.Watchdog();
      }
      if (stop.load()) break;
      Connect();
    }
  }
  job_.reset();
  notifier_.Stopping();
  Log("stopped");
  return 0;
}

}  // namespace fedsgd
