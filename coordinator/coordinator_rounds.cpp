// CoordinatorServer's rounds (see coordinator_server.h): opening one and
// inviting its devices, broadcasting the model, closing it (aggregate,
// check, evaluate, commit) and the round's log line. The message loop is in
// coordinator_server.cpp; a gateway's rounds in coordinator_gateway.cpp.
#include <cstdio>

#include "coordinator_server.h"
#include "fedsgd/broadcast_codec.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "model_guard.h"
#include "wall_clock.h"

namespace fedsgd {

using Clock = std::chrono::steady_clock;

void CoordinatorServer::Broadcast(bool final) {
  const auto t0 = Clock::now();
  wire::Model m{
      std::to_string(manager_->run_id()), manager_->version(), manager_->open_round(), final, {}};
  wire::SendFrames(pub_, WithWeights(std::move(m)));
  last_broadcast_seconds_ = Since(t0);
}

std::vector<zmq::message_t> CoordinatorServer::WithWeights(wire::Message message) {
  if (!weights_frame_ || weights_version_ != manager_->version()) {
    // Once per model version, in the plan's broadcast_codec (fp32 stays
    // the truth here).
    wire::Model m;
    if (broadcast_encoding_ == wire::TensorEncoding::kFp32) {
      m.params = manager_->params();
    } else {
      m.encoded = wire::EncodeWeights(broadcast_encoding_, manager_->params());
    }
    weights_encoding_ = m.encoded.encoding;
    weights_count_ = manager_->params().size();
    std::vector<zmq::message_t> frames = wire::Encode(std::move(m));
    weights_frame_ = std::make_unique<zmq::message_t>(std::move(frames.back()));
    weights_version_ = manager_->version();
  }
  wire::EncodedTensor* encoded = nullptr;
  if (auto* w = std::get_if<wire::Welcome>(&message)) encoded = &w->encoded;
  if (auto* m = std::get_if<wire::Model>(&message)) encoded = &m->encoded;
  encoded->encoding = weights_encoding_;
  encoded->count = weights_count_;
  std::vector<zmq::message_t> frames = wire::Encode(std::move(message));
  // zmq_msg_copy shares the buffer (reference-counted): every message of
  // this version points at the one frame, however many are queued.
  frames.back().copy(*weights_frame_);
  bytes_out_ += weights_frame_->size();
  ++models_sent_;
  return frames;
}

void CoordinatorServer::OpenRound() {
  const std::uint64_t round = manager_->OpenRound(Now(), UnixNow());
  if (!plan_.selection()) {
    log_ << "fedsgd-coordinator: round " << round << " open for " << manager_->participants()
         << " device(s)" << std::endl;
  }
  Broadcast(false);
  Invite();
  PublishStatus();
}

void CoordinatorServer::Invite() {
  const std::uint64_t round = manager_->open_round();
  if (!round) return;
  if (uploads_) uploads_->Clear();
  const nlohmann::json selection = manager_->selection();
  if (selection.is_null()) return;
  log_ << "fedsgd-coordinator: round " << round << " open: invited "
       << selection["invited"].get<std::size_t>() << " of "
       << selection["online"].get<std::size_t>() << " online device(s) to close with "
       << manager_->quorum_target() << " update(s) (selection seed "
       << selection["seed"].get<std::string>() << ")" << std::endl;
  DeviceRegistry& devices = manager_->devices();
  std::size_t invitations_deferred = 0;
  for (const auto& [id, info] : devices.devices()) {
    if (!manager_->Participates(id) || info.routing_id.empty()) continue;
    // A device that closed its connection until its next check-in (pace
    // steering) cannot be reached: it is invited when it checks in, and until
    // then it is expected back at the interval it was last told, not the base.
    const zmq::message_t routing_id(info.routing_id.data(), info.routing_id.size());
    (void)router_.get(zmq::sockopt::events);  // as Reply: the peers' reads, now
    if (wire::SendFrames(router_,
                         wire::Encode(wire::Ack{round, manager_->version(), "invited", true,
                                                options_.heartbeat_ms}),
                         &routing_id)) {
      devices.Find(id)->heartbeat_ms = options_.heartbeat_ms;
    } else {
      ++invitations_deferred;
    }
  }
  if (invitations_deferred) {
    log_ << "fedsgd-coordinator: round " << round << ": " << invitations_deferred
         << " invited device(s) hold no connection now and hear it when they check in" << std::endl;
  }
}

void CoordinatorServer::CloseRound() {
  if (gateway()) return ForwardRound();  // the root aggregates and steps
  const RoundSettings& settings = manager_->settings();
  ClosedRound closed = manager_->CloseRound(UnixNow());
  PublishStatus();  // shows "aggregating"
  RoundRecord& r = closed.record;
  if (const auto non_finite = FindNonFinite(closed.params)) {
    // Committed, such a model would be resumed after every restart.
    ++rounds_refused_;
    log_ << LogPriority(LogLevel::kError) << "fedsgd-coordinator: round " << r.round
         << " refused, its updates discarded and the round opened again: the new model is not "
            "finite ("
         << *non_finite << ")" << std::endl;
    manager_->Discard();
    PublishStatus();
    return;
  }
  const Architecture arch = plan_.architecture();
  const auto eval_start = Clock::now();
  if (eval_) {
    const Evaluation ev = Evaluate(arch, closed.params.data(), *eval_, 2);
    r.test_accuracy = ev.accuracy;
    r.test_loss = ev.loss;
  }
  last_eval_seconds_ = Since(eval_start);
  const auto t0 = Clock::now();
  try {
    store_->CommitRound(r, closed.params, closed.state);
  } catch (const Error& e) {
    log_ << LogPriority(LogLevel::kError) << "fedsgd-coordinator: round " << r.round
         << " could not be committed, running it again: " << e.what() << std::endl;
    manager_->Discard();
    return;
  }
  last_commit_seconds_ = Since(t0);
  const std::uint64_t round = r.round;
  last_round_ = r;
  const std::size_t clipped = r.aggregation.value("clipped", std::size_t{0});
  updates_clipped_ += clipped;
  ++rounds_committed_;
  const double duration = r.finished_at - r.started_at;
  duration_sum_ += duration;
  if (duration_buckets_.empty()) duration_buckets_.assign(std::size(kDurationBuckets), 0);
  for (std::size_t b = 0; b < std::size(kDurationBuckets); ++b) {
    if (duration <= kDurationBuckets[b]) ++duration_buckets_[b];
  }
  manager_->Commit(std::move(closed));
  // One broadcast carries the new model and, when enough devices are
  // online, the next round.
  const bool open_next = manager_->ShouldOpen();
  if (open_next) manager_->OpenRound(Now(), UnixNow());
  Broadcast(manager_->done());

  last_receive_seconds_ = receive_seconds_;
  char line[900];
  std::string acc = "n/a", tloss = "n/a";
  if (r.test_accuracy) acc = std::to_string(*r.test_accuracy).substr(0, 6);
  if (r.test_loss) tloss = std::to_string(*r.test_loss).substr(0, 6);
  // The devices' view of the model they trained from (version round - 1).
  std::string federated = "n/a";
  if (const auto f = r.federated_evaluation()) {
    char text[96];
    std::snprintf(text, sizeof text, "%.4f (min %.4f, median %.4f, max %.4f)", f->accuracy,
                  f->min_accuracy, f->median_accuracy, f->max_accuracy);
    federated = text;
  }
  if (const auto p = r.personalisation()) {
    char text[128];
    std::snprintf(text, sizeof text, ", personalised %.4f (global %.4f; worse on %zu of %zu)",
                  p->personal_accuracy, p->global_accuracy, p->worse, p->devices);
    federated += text;
  }
  const std::size_t updates = r.devices.size();
  // Against the 4 bytes a float32 parameter needs: what the header costs.
  const double per_update = BytesPerUpdate(r);
  std::snprintf(
      line, sizeof line,
      "round %llu/%llu: test accuracy %s, test loss %s, federated accuracy %s, train "
      "loss %.4f, %.2f s, %zu "
      "device(s) (receive %.1f ms, aggregate %.2f ms, evaluate %.1f ms, commit %.1f ms, "
      "broadcast %.1f ms, %.0f bytes/update = %.4f x 4 x parameters), %s: %zu "
      "clipped to norm %s%s",
      static_cast<unsigned long long>(round), static_cast<unsigned long long>(settings.rounds),
      acc.c_str(), tloss.c_str(), federated.c_str(), r.train_loss, r.finished_at - r.started_at,
      updates, receive_seconds_ * 1e3, r.aggregate_seconds * 1e3, last_eval_seconds_ * 1e3,
      last_commit_seconds_ * 1e3, last_broadcast_seconds_ * 1e3, per_update,
      per_update / ParameterBytes(), r.aggregation.value("rule", std::string("?")).c_str(), clipped,
      BoundText(r).c_str(), AggregationNote(r).c_str());
  std::string summary = line;
  if (r.aggregation.contains("staleness_mean")) {
    std::snprintf(
        line, sizeof line, ", async buffer of %zu, staleness mean %.2f max %llu", updates,
        r.aggregation["staleness_mean"].get<double>(),
        static_cast<unsigned long long>(r.aggregation["staleness_max"].get<std::uint64_t>()));
    summary += line;
  }
  if (r.privacy.is_object()) {
    std::snprintf(line, sizeof line, ", privacy: epsilon %.4g at delta %.3g, clip %.4g",
                  r.privacy["epsilon"].get<double>(), r.privacy["delta"].get<double>(),
                  r.privacy["clip"].get<double>());
    summary += line;
  }
  log_ << summary << std::endl;
  notifier_.Status(summary);
  if (open_next && !plan_.selection()) {
    log_ << "fedsgd-coordinator: round " << manager_->open_round() << " open for "
         << manager_->participants() << " device(s)" << std::endl;
  }
  if (open_next) Invite();
  receive_seconds_ = 0;
  PublishStatus();
}

std::string CoordinatorServer::BoundText(const RoundRecord& r) {
  const auto it = r.aggregation.find("norm_bound");
  if (it == r.aggregation.end() || !it->is_number()) return "off";
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", it->get<double>());
  return text;
}

std::string CoordinatorServer::AggregationNote(const RoundRecord& r) {
  const std::string note = r.aggregation.value("note", std::string());
  return note.empty() ? "" : " (" + note + ")";
}

double CoordinatorServer::BytesPerUpdate(const RoundRecord& r) {
  return r.devices.empty()
             ? 0.0
             : static_cast<double>(r.bytes_in) / static_cast<double>(r.devices.size());
}

double CoordinatorServer::ParameterBytes() const {
  return static_cast<double>(manager_->params().size() * sizeof(float));
}

}  // namespace fedsgd
