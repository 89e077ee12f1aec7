// DeviceClient's training (see device_client.h): cutting the shard for the
// plan, starting and finishing TrainingJobs, sending their updates, the
// asynchronous mode's next job, and keeping the newest model for `predict`.
// The connection and the messages are in device_client.cpp.
#include <algorithm>
#include <functional>

#include "device_client.h"
#include "fedsgd/error.h"
#include "fedsgd/holdout.h"
#include "log_text.h"
#include "saved_model.h"

namespace fedsgd {

void DeviceClient::TrainNextAsync() {
  // One update in flight per device: the next job waits for the answer to
  // the last one, so a coordinator that falls behind slows its fleet down
  // instead of queueing ever staler updates.
  if (!Async() || !joined_ || job_ || update_in_flight_ || finished_ || announced_round_ == 0) {
    return;
  }
  const std::uint64_t round = model_version_ + 1;  // async: each version's buffer
  if (round > last_trained_round_) StartTraining(round);
}

void DeviceClient::PrepareData(const Plan& plan) {
  const int classes = plan.architecture().num_classes();
  if (plan.eval_fraction == split_fraction_ && classes == split_classes_) return;
  CancelTraining();  // a job reads the sets about to be replaced
  unsent_.reset();   // and its result counted samples of the old split
  // Seeded per device: every device holds out its own samples.
  split_ =
      HoldOut(shard_, plan.eval_fraction, options_.seed ^ std::hash<std::string>{}(options_.id));
  flipped_ = {};
  if (attack_.kind == SimulatedAttack::Kind::kLabelFlip) {
    flipped_ = shard_.Subset(split_.train);
    attack_.FlipLabels(flipped_, classes);
  }
  split_fraction_ = plan.eval_fraction;
  split_classes_ = classes;
  if (!split_.eval.empty()) {
    Log("federated evaluation: " + std::to_string(split_.eval.size()) + " of " +
        std::to_string(shard_.size()) + " samples held out, " +
        std::to_string(split_.train.size()) + " to train on");
  }
}

void DeviceClient::StartTraining(std::uint64_t round) {
  if (!plan_ || !unfit_reason_.empty()) return;
  CancelTraining();
  const DatasetView train = attack_.kind == SimulatedAttack::Kind::kLabelFlip
                                ? DatasetView(flipped_)
                                : DatasetView(shard_, split_.train);
  const DatasetView held_out(shard_, split_.eval);
  job_ = std::make_unique<TrainingJob>(
      *plan_, train, params_, round, model_version_, threads_, mode_, options_.seed,
      held_out.size() > 0 ? &held_out : nullptr, options_.slowdown);
  job_run_id_ = run_id_;
  Log("round " + std::to_string(round) + ": training from model version " +
      std::to_string(model_version_));
}

void DeviceClient::CancelTraining() {
  if (!job_) return;
  const bool running = !job_->done();
  const std::uint64_t round = job_->round();
  job_.reset();  // cancels, and returns after the current mini-batch
  if (running) Log("round " + std::to_string(round) + ": training cancelled");
}

void DeviceClient::FinishTraining() {
  TrainingResult r = job_->TakeResult();
  const std::string run = job_run_id_;
  job_.reset();
  if (!r.error.empty()) {
    Log("round " + std::to_string(r.round) + ": training failed: " + r.error +
            Format("; asking the coordinator again in %.0f s", timing_.unfit_retry),
        LogLevel::kError);
    unfit_reason_ = r.error;
    plan_.reset();
    ReconnectLater(timing_.unfit_retry);
    return;
  }
  if (r.cancelled) return;
  SavePersonalModel(r);
  attack_.Apply(r.payload, attack_rng_);
  last_loss_ = r.loss;
  last_samples_per_second_ = r.samples_per_second;
  if (!joined_ || run != run_id_) {
    Log("round " + std::to_string(r.round) + ": trained " + std::to_string(r.processed) +
        " samples; holding the update until the coordinator welcomes this device again");
    unsent_ = std::move(r);
    unsent_run_id_ = run;
    return;
  }
  SendUpdate(std::move(r));
}

void DeviceClient::SendUpdate(TrainingResult r, bool granted) {
  last_trained_round_ = std::max(last_trained_round_, r.round);
  if (Selective() && !granted) {
    // Flow control: ask for a slot (Tick sends the "sending" heartbeat).
    Log("round " + std::to_string(r.round) + ": trained " + std::to_string(r.processed) +
        " samples; asking the coordinator for an upload slot");
    awaiting_upload_ = std::move(r);
    upload_ask_at_ = Now();
    return;
  }
  if (compressor_.active() && r.encoded.encoding == wire::TensorEncoding::kFp32) {
    r.encoded = compressor_.Compress(r.payload);
  }
  const std::size_t bytes = r.encoded.encoding == wire::TensorEncoding::kFp32
                                ? r.payload.size() * sizeof(float)
                                : r.encoded.bytes.size();
  const std::string line =
      "round " + std::to_string(r.round) + ": trained " + std::to_string(r.processed) + " samples" +
      Format(" in %.3f s (loss %.4f, %.0f samples/s), ", r.seconds, r.loss, r.samples_per_second);
  // The payload is copied (a few hundred KB, next to seconds of training) so
  // that an update the DEALER cannot take now is kept for after the rejoin.
  const bool compressed = r.encoded.encoding != wire::TensorEncoding::kFp32;
  wire::Update u{
      options_.id, r.round, r.model_version, r.samples,
      r.loss,      r.kind,  r.seconds,       compressed ? std::vector<float>() : r.payload,
      std::nullopt};
  if (compressed) u.encoded = r.encoded;
  std::string personal;
  if (r.evaluation) {
    u.evaluation = wire::HeldOutEvaluation{Finite(r.evaluation->loss), r.evaluation->accuracy,
                                           r.evaluation->samples};
    if (r.personal) {
      u.personal = wire::HeldOutEvaluation{Finite(r.personal->loss), r.personal->accuracy,
                                           r.personal->samples};
      personal = Format("held-out accuracy %.4f global, %.4f personalised; ",
                        r.evaluation->accuracy, r.personal->accuracy);
    }
  }
  if (Send(std::move(u))) {
    ++updates_sent_;
    Log(line + personal + "update sent (" + std::to_string(bytes) + " bytes)");
    // Asynchronous: the answer (TrainNextAsync) starts the next job, from the
    // newest model this device has or, if that is the one just trained from,
    // from the next one the Ack or a broadcast brings.
    if (Async()) {
      update_in_flight_ = true;
      update_sent_at_ = Now();
    }
    return;
  }
  Log(line + "update held: the coordinator is away");
  unsent_ = std::move(r);
  unsent_run_id_ = run_id_;
}

void DeviceClient::SaveNewestModel(bool force) {
  if (options_.state_dir.empty() || !plan_ || !params_) return;
  if (run_id_ == saved_run_id_ && model_version_ == saved_version_) return;
  const double now = Now();
  if (!force && !finished_ && now - saved_at_ < kSaveInterval) return;
  saved_at_ = now;
  try {
    SaveModel(options_.state_dir,
              {plan_->architecture().ToString(), model_version_, run_id_, *params_});
    saved_run_id_ = run_id_;
    saved_version_ = model_version_;
  } catch (const Error& e) {
    Warn("save_failed", std::string("cannot keep the newest model: ") + e.what());
  }
}

void DeviceClient::SavePersonalModel(TrainingResult& r) {
  if (!plan_ || r.personal_params.empty()) return;
  if (inference_ && options_.inference_model == "personal") {
    auto model = std::make_shared<ServedModel>();
    model->arch = plan_->architecture();
    model->params = ShareParams(r.personal_params);
    model->run_id = run_id_;
    model->model_version = r.model_version;
    model->source = "personal";
    served_.Publish(std::move(model));
    served_personal_run_ = run_id_;
  }
  if (options_.state_dir.empty()) {
    r.personal_params.clear();
    return;
  }
  try {
    SaveModel(
        options_.state_dir,
        {plan_->architecture().ToString(), r.model_version, run_id_, std::move(r.personal_params)},
        "personal");
  } catch (const Error& e) {
    Warn("save_failed", std::string("cannot keep the personalised model: ") + e.what());
  }
  r.personal_params.clear();
}

}  // namespace fedsgd
