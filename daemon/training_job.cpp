// TrainingJob (see training_job.h).
#include "training_job.h"

#include <chrono>

#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/pacer.h"

namespace fedsgd {

TrainingJob::TrainingJob(const Plan& plan, const DatasetView& data, SharedParams global,
                         std::uint64_t round, std::uint64_t model_version, int threads,
                         TrainMode mode, std::uint64_t seed, const DatasetView* held_out,
                         double slowdown)
    : plan_(plan),
      data_(data),
      held_out_(held_out ? std::optional<DatasetView>(*held_out) : std::nullopt),
      global_(std::move(global)),
      round_(round),
      model_version_(model_version),
      threads_(threads),
      slowdown_(slowdown),
      mode_(mode),
      seed_(seed) {
  if (!global_) throw Error("a training job needs a global model");
  thread_ = std::thread([this] { Work(); });
}

TrainingJob::~TrainingJob() {
  Cancel();
  if (thread_.joinable()) thread_.join();
}

double TrainingJob::progress() const {
  const double total = static_cast<double>(progress_.total_samples.load(std::memory_order_relaxed));
  const double done = static_cast<double>(progress_.samples.load(std::memory_order_relaxed));
  return total > 0 ? std::min(1.0, done / total) : 0.0;
}

double TrainingJob::samples_per_second() const {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = static_cast<double>(progress_.samples.load(std::memory_order_relaxed));
  return seconds > 0 ? done / seconds : 0.0;
}

TrainingResult TrainingJob::TakeResult() {
  if (thread_.joinable()) thread_.join();
  return std::move(result_);
}

TrainOptions TrainingJob::LocalOptions() const {
  TrainOptions o;
  o.threads = threads_;
  o.mode = mode_;
  o.batch = plan_.batch;
  o.sgd = plan_.sgd;
  o.logit_adjustment = static_cast<float>(plan_.logit_adjustment);
  o.slowdown = slowdown_;
  o.class_weighting = ParseClassWeighting(plan_.class_weighting);
  // A different shuffle every round, the same for a given round.
  o.seed = seed_ * 1000003u + round_;
  return o;
}

void TrainingJob::Personalize(TrainingResult& r) {
  Model personal{plan_.architecture(), *global_};
  TrainOptions o = LocalOptions();
  o.epochs = 0;  // as many passes as the steps take
  o.max_steps = plan_.personalize_steps;
  o.frozen = plan_.PersonalFrozenParameters();
  o.seed ^= 0x5045525350ULL;  // its own shuffle, not the global training's
  // Its samples are not the round's: the progress shown is the training's.
  const TrainStats stats = LocalTrainer(o).Train(personal, data_, {}, &cancel_, nullptr);
  if (stats.stopped) return;
  r.personal = Evaluate(personal.arch, personal.params.data(), *held_out_, threads_);
  r.personal_params = std::move(personal.params);
}

void TrainingJob::Work() {
  TrainingResult& r = result_;
  r.round = round_;
  r.model_version = model_version_;
  r.samples = data_.size();
  try {
    const Architecture arch = plan_.architecture();
    const std::vector<float>& global = *global_;
    const std::size_t frozen = plan_.FrozenParameters();
    if (held_out_ && held_out_->size() > 0 && !cancel_.load()) {
      r.evaluation = Evaluate(arch, global.data(), *held_out_, threads_);
    }
    if (plan_.personalize() && r.evaluation && !cancel_.load()) Personalize(r);
    if (plan_.algorithm == Algorithm::kFedAvg) {
      TrainOptions o = LocalOptions();
      o.epochs = plan_.local_epochs;
      o.max_steps = plan_.local_steps;
      o.prox_mu = static_cast<float>(plan_.prox_mu);
      o.sgd.lr = plan_.RoundLr(round_);  // personalisation keeps the plan's lr
      o.frozen = frozen;
      Model model{arch, global};  // the one copy: trained, then turned into the delta
      const TrainStats stats = LocalTrainer(o).Train(model, data_, {}, &cancel_, &progress_);
      r.cancelled = stats.stopped;
      r.processed = stats.samples;
      r.loss = stats.train_loss;
      r.samples_per_second = stats.samples_per_second();
      r.kind = "delta";
      std::vector<float>& delta = model.params;
      for (std::size_t i = frozen; i < delta.size(); ++i) delta[i] -= global[i];
      // Frozen parameters are not sent.
      delta.erase(delta.begin(), delta.begin() + static_cast<std::ptrdiff_t>(frozen));
      r.payload = std::move(delta);
    } else {
      // FedSGD: the full-shard gradient at the global model.
      if (data_.num_features() != arch.input_size()) {
        throw Error("the data has " + std::to_string(data_.num_features()) + " features, model " +
                    arch.ToString() + " expects " + std::to_string(arch.input_size()));
      }
      const int batch = plan_.batch;
      Workspace ws(arch, batch);
      std::vector<float> grad(global.size());
      std::vector<float> x(static_cast<std::size_t>(batch) * arch.input_size()), y(batch);
      std::vector<double> sum(global.size(), 0.0);
      double loss = 0;
      progress_.total_samples.store(data_.size());
      const Pacer pacer(slowdown_, &cancel_);
      for (std::size_t begin = 0; begin < data_.size() && !cancel_.load(); begin += batch) {
        const auto batch_start = std::chrono::steady_clock::now();
        const int rows = static_cast<int>(std::min<std::size_t>(batch, data_.size() - begin));
        data_.Copy(begin, static_cast<std::size_t>(rows), x.data(), y.data());
        loss += static_cast<double>(ForwardBackward(arch, global.data(), x.data(), y.data(), rows,
                                                    grad.data(), ws)) *
                rows;
        for (std::size_t i = 0; i < grad.size(); ++i) sum[i] += static_cast<double>(grad[i]) * rows;
        progress_.samples.fetch_add(static_cast<std::uint64_t>(rows));
        pacer.After(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_start).count());
      }
      r.cancelled = cancel_.load();
      r.processed = progress_.samples.load();
      const double n = static_cast<double>(data_.size());
      r.kind = "gradient";
      r.payload.resize(global.size() - frozen);
      for (std::size_t i = frozen; i < sum.size(); ++i) {
        r.payload[i - frozen] = static_cast<float>(sum[i] / n);
      }
      r.loss = loss / n;
    }
  } catch (const std::exception& e) {
    // Error: the plan does not fit the data; bad_alloc: nor the memory. The
    // network thread reports it; the daemon itself stays up.
    r.error = e.what();
    if (r.error.empty()) r.error = "training failed";
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (r.samples_per_second == 0 && r.seconds > 0) {
    r.samples_per_second = static_cast<double>(progress_.samples.load()) / r.seconds;
  }
  done_.store(true, std::memory_order_release);
}

}  // namespace fedsgd
