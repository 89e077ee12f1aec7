// TrainingJob: one round's local training, on a thread of its own.
//
// Started by the network thread with the global model of a round; it never
// touches a socket. With a held-out set (federated evaluation) it first
// scores the global model on it (and, with the plan's personalize_steps,
// fine-tunes a copy for that many mini-batches and scores it too), then
// trains. FedAvg runs LocalTrainer for the plan's local epochs
// / steps and yields delta = trained - global. FedSGD yields the gradient of the mean loss over the
// whole shard at the global model (computed in mini-batches of the plan's size on one thread).
// Cancel() makes it end after the current mini-batch. The network thread polls done() and then
// takes the result.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fedsgd/dataset.h"
#include "fedsgd/dataset_view.h"
#include "fedsgd/network.h"
#include "fedsgd/plan.h"
#include "fedsgd/trainer.h"
#include "fedsgd/update_codec.h"
#include "shared_params.h"

namespace fedsgd {

struct TrainingResult {
  std::uint64_t round = 0;
  std::uint64_t model_version = 0;
  std::string kind;  // delta | gradient
  std::vector<float> payload;
  std::uint64_t samples = 0;    // the shard's size: the update's weight
  std::uint64_t processed = 0;  // samples trained on (counting repeats)
  double loss = 0;
  double seconds = 0;
  double samples_per_second = 0;
  // The global model on the held-out samples, before training; absent
  // without a held-out set (or an empty one).
  std::optional<Evaluation> evaluation;
  // Personalisation (Plan::personalize_steps): the global model fine-tuned
  // on the training part, and its score on the same held-out samples.
  std::optional<Evaluation> personal;
  std::vector<float> personal_params;
  bool cancelled = false;
  std::string error;  // set when training failed (e.g. the plan does not fit the data)
  // The payload compressed with the plan's update codec, once (set by the
  // DeviceClient before the first send, so a resend does not feed the
  // error-feedback residual twice); fp32 = not compressed.
  wire::EncodedTensor encoded{};
};

class TrainingJob {
 public:
  // The data set behind `data` (and `held_out`, which may be null), and
  // the views' index arrays, must outlive the job. threads/mode are the
  // device's own settings; slowdown >= 1 makes every mini-batch take that
  // many times as long (--slowdown, fedsgd/pacer.h).
  TrainingJob(const Plan& plan, const DatasetView& data, SharedParams global, std::uint64_t round,
              std::uint64_t model_version, int threads, TrainMode mode, std::uint64_t seed,
              const DatasetView* held_out = nullptr, double slowdown = 1);
  ~TrainingJob();  // cancels and joins
  TrainingJob(const TrainingJob&) = delete;
  TrainingJob& operator=(const TrainingJob&) = delete;

  std::uint64_t round() const { return round_; }
  std::uint64_t model_version() const { return model_version_; }
  bool done() const { return done_.load(std::memory_order_acquire); }
  void Cancel() { cancel_.store(true); }
  // Fraction of the planned samples done (0..1), and samples per second so
  // far; both safe to call from any thread while the job runs.
  double progress() const;
  double samples_per_second() const;
  // The result; only after done() is true.
  TrainingResult TakeResult();

 private:
  void Work();
  // The options local training and personalisation share.
  TrainOptions LocalOptions() const;
  // Fine-tunes a copy of the global model and scores it (r.personal).
  void Personalize(TrainingResult& r);

  Plan plan_;
  const DatasetView data_;
  const std::optional<DatasetView> held_out_;
  const SharedParams global_;  // never null
  std::uint64_t round_;
  std::uint64_t model_version_;
  int threads_;
  double slowdown_;
  TrainMode mode_;
  std::uint64_t seed_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> done_{false};
  TrainProgress progress_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  TrainingResult result_;
  std::thread thread_;
};

}  // namespace fedsgd
