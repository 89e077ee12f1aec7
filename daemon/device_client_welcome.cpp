// DeviceClient joining (see device_client.h and docs/protocol.md "Conversation"):
// the limits a model must meet, the welcome's plan checked against this
// device and its data, and the run, model and subscription it sets up. The
// message loop is in device_client.cpp.
#include "device_client.h"
#include "fedsgd/broadcast_codec.h"
#include "fedsgd/error.h"
#include "fedsgd/socket_options.h"
#include "log_text.h"

namespace fedsgd {

wire::Limits DeviceClient::ModelLimits() const {
  if (!joined_ || !plan_) return wire::Limits{};
  // A Model in another encoding than the plan's broadcast_codec means a
  // confused coordinator: dropped as bad_field (a Welcome is checked
  // against its own plan in CheckPlan).
  wire::Limits limits{parameter_count_};
  limits.model_encoding = wire::ParseBroadcastCodec(plan_->broadcast_codec);
  return limits;
}

std::optional<std::string> DeviceClient::CheckPlan(const wire::Welcome& w, Plan& plan) const {
  try {
    plan = Plan::FromJson(w.plan);
    plan.Validate();
    const Architecture arch = plan.architecture();
    if (arch.input_size() != shard_.num_features) {
      return "model " + arch.ToString() + " expects " + std::to_string(arch.input_size()) +
             " features but this device's data has " + std::to_string(shard_.num_features);
    }
    if (arch.num_classes() > 0 && shard_.num_classes > arch.num_classes()) {
      return "model " + arch.ToString() + " has " + std::to_string(arch.num_classes()) +
             " classes but this device's data has " + std::to_string(shard_.num_classes);
    }
    if (attack_.kind == SimulatedAttack::Kind::kLabelFlip &&
        (arch.num_classes() < 2 || shard_.num_classes == 0)) {
      return "--simulate-attack label-flip needs a classifier with at least 2 classes and "
             "labelled data";
    }
    if (const auto encoding = wire::ParseBroadcastCodec(plan.broadcast_codec);
        w.encoded.encoding != encoding) {
      return "the welcome's model is encoded as " +
             std::string(wire::ToString(w.encoded.encoding)) + ", its plan's broadcast_codec is " +
             plan.broadcast_codec;
    }
    // With device selection a welcome may come without weights: the
    // device fetches them when it is invited.
    if (w.params.size() != arch.ParameterCount() && !(plan.selection() && w.params.empty())) {
      return "the welcome's model has " + std::to_string(w.params.size()) +
             " parameters, the plan's " + arch.ToString() + " has " +
             std::to_string(arch.ParameterCount());
    }
  } catch (const Error& e) {
    return std::string("bad plan: ") + e.what();
  }
  return std::nullopt;
}

void DeviceClient::HandleWelcome(wire::Welcome& w) {
  if (w.device != options_.id) return DropBad("a welcome for device '" + w.device + "'");
  ++joins_;
  backoff_.Reset();
  heartbeat_ms_ = w.heartbeat_ms;
  // A (re)started coordinator selects afresh; an update that waited for a
  // slot is sent like one held while away, if its round is still open.
  selected_round_ = 0;
  if (awaiting_upload_) {
    unsent_ = std::move(awaiting_upload_);
    unsent_run_id_ = run_id_;
    awaiting_upload_.reset();
  }
  Plan plan;
  if (std::optional<std::string> unfit = CheckPlan(w, plan)) {
    // Staying joined would make this device a participant that never sends
    // an update, so every round would wait for it until its deadline.
    Backoff retry(timing_.unfit_retry, timing_.unfit_retry, timing_.backoff_jitter, joins_);
    const double delay = retry.Next();
    if (*unfit != unfit_reason_) {
      Log("cannot take part in run " + w.run_id + ": " + *unfit +
              Format("; asking the coordinator again every %.0f s", timing_.unfit_retry),
          LogLevel::kError);
    }
    unfit_reason_ = *unfit;
    notifier_.Status("the coordinator's plan does not fit this device's data");
    CancelTraining();
    unsent_.reset();
    plan_.reset();
    params_.reset();
    ReconnectLater(delay);
    return;
  }
  if (!unfit_reason_.empty()) Log("the coordinator's plan fits this device's data now");
  unfit_reason_.clear();
  joined_ = true;
  fetch_sent_at_ = -1;
  plan_ = std::move(plan);
  PrepareData(*plan_);
  run_id_ = w.run_id;
  model_version_ = w.model_version;
  // None in a selection welcome: fetched when invited.
  params_ = w.params.empty() ? nullptr : ShareParams(std::move(w.params));
  parameter_count_ = plan_->architecture().ParameterCount();
  // The error-feedback residual survives a rejoin of the same run and is
  // reset for another one (update_compressor.h). The plan was validated.
  // Updates carry the trainable parameters only (Plan::freeze_layers).
  compressor_.Prepare(run_id_, wire::UpdateCodec::Parse(plan_->update_codec),
                      plan_->TrainableParameters());
  // A (re)started coordinator remembers nothing of its open round: whatever
  // this device sent before the welcome may be lost, so every round open
  // from now on is trained again. A duplicate is refused, never counted twice.
  last_trained_round_ = 0;
  announced_round_ = w.round;
  update_in_flight_ = false;
  finished_ = false;

  publish_endpoint_ = PublishEndpoint(w.publish_endpoint);
  Subscribe();
  Log("joined run " + run_id_ + " at model version " + std::to_string(model_version_) +
      (w.round ? " (round " + std::to_string(w.round) + " open)" : " (no round open)"));
  if (!ready_) {
    notifier_.Ready();
    ready_ = true;
  }
  notifier_.Status("joined run " + run_id_ + " at " + options_.coordinator);

  // Training or a result for exactly the open round (same run, same model
  // version, hence the same params) is as good as training again.
  // Asynchronous: any work from this run is worth sending; the coordinator
  // weights it by staleness, or refuses it as stale or as already applied.
  auto current = [&](std::uint64_t round, std::uint64_t version, const std::string& run) {
    if (Async()) return w.round > 0 && run == run_id_;
    return w.round > 0 && round == w.round && version == model_version_ && run == run_id_;
  };
  bool resumed = false;
  if (unsent_) {
    TrainingResult held = std::move(*unsent_);
    unsent_.reset();
    if (current(held.round, held.model_version, unsent_run_id_)) {
      SendUpdate(std::move(held));
      resumed = true;
    }
  }
  if (job_) {
    if (current(job_->round(), job_->model_version(), job_run_id_)) {
      resumed = true;
    } else {
      CancelTraining();
    }
  }
  // With device selection the round is trained only once invited (the
  // Ack of the heartbeat below says).
  if (!resumed && w.round > 0 && !Selective()) StartTraining(w.round);
  // A SUB socket takes a moment to subscribe (ZeroMQ's slow joiner), so a
  // round opened right now may not reach it: heartbeat soon, and the Ack
  // tells of any open round.
  last_heartbeat_ = Now() - heartbeat_ms_ / 1000.0 + 0.2;
}

}  // namespace fedsgd
