// LocalTrainer: multithreaded mini-batch SGD on one device's data shard.
//
// Two modes:
//   hogwild  each thread draws its own mini-batches and updates the shared
//            weights without locks (Recht et al. 2011). A thread reads a
//            snapshot of the weights and writes its update through
//            std::atomic_ref<float> with relaxed order: updates may overwrite
//            one another, but there is no data race and TSan stays clean.
//            Fastest; not bit-for-bit repeatable with more than one thread.
//   sync     every mini-batch is split across the threads, their gradients
//            are summed in a fixed order and one update is applied.
//            Deterministic for a given seed and thread count.
//
// Train() blocks until the epochs are done, the early-stop rule fires, or
// the stop flag is set (then it returns after the current mini-batch).
// A LocalTrainer is used by one thread at a time.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "fedsgd/class_balance.h"
#include "fedsgd/dataset.h"
#include "fedsgd/dataset_view.h"
#include "fedsgd/model.h"
#include "fedsgd/optimizer.h"

namespace fedsgd {

enum class TrainMode { kHogwild, kSync };
TrainMode ParseTrainMode(std::string_view text);  // "hogwild" | "sync"; throws Error
std::string ToString(TrainMode mode);

struct TrainOptions {
  int threads = 1;
  TrainMode mode = TrainMode::kHogwild;
  int batch = 32;
  double epochs = 1;   // may be fractional (e.g. 0.5 epoch)
  long max_steps = 0;  // > 0: stop after this many mini-batches in total
  SgdOptions sgd;
  double early_stop_delta = 0;  // > 0: stop when an epoch's mean loss moves less
  // FedProx (see proximal_term.h): > 0 adds prox_mu * (w - w_start) to every
  // gradient, w_start being the model's weights when Train() is called.
  float prox_mu = 0;
  // Logit adjustment for label skew (Menon et al. 2021, "Long-tail learning
  // via logit adjustment"; in federated learning, FedLC, Zhang et al. 2022):
  // > 0 trains softmax models on z + tau * log(prior) instead of the logits
  // z, the prior being this data set's class frequencies (LogitOffsets in
  // class_balance.h).
  // A device that holds few classes then stops pushing the others' logits
  // down, and the shared model's plain logits estimate class-balanced
  // posteriors. 0 = off. Other losses ignore it.
  float logit_adjustment = 0;
  // Straggler simulation (fedsgd/pacer.h): every mini-batch takes this many
  // times as long (>= 1; 1 = off). Only for simulated fleets.
  double slowdown = 1;
  // Softmax models only (ClassWeighting in class_balance.h); other losses
  // ignore it.
  ClassWeighting class_weighting = ClassWeighting::kNone;
  // Fine-tuning (Plan::freeze_layers): the first `frozen` parameters are
  // not updated (no step, no momentum, no decay, no proximal term); the
  // gradient still flows through them to the layers after. 0 = none.
  std::size_t frozen = 0;
  std::uint64_t seed = 1;
};

struct EpochReport {
  int epoch = 0;          // 1-based
  double train_loss = 0;  // mean over the epoch's mini-batches
  double seconds = 0;
  std::size_t samples = 0;  // processed so far
};

struct TrainStats {
  std::size_t samples = 0;  // samples processed (counting repeats)
  long steps = 0;           // mini-batch updates applied
  int epochs = 0;           // epochs begun
  double train_loss = 0;    // mean loss of the last epoch
  double seconds = 0;       // wall time of the training loop
  bool stopped = false;     // ended by the stop flag
  bool early_stopped = false;
  double samples_per_second() const {
    return seconds > 0 ? static_cast<double>(samples) / seconds : 0;
  }
};

// Live figures of a running Train(), for other threads (e.g. the daemon's
// heartbeats) to read while it runs.
struct TrainProgress {
  std::atomic<std::uint64_t> samples{0};        // processed so far
  std::atomic<std::uint64_t> total_samples{0};  // planned for the whole call
};

class LocalTrainer {
 public:
  explicit LocalTrainer(TrainOptions options);

  // Trains model.params in place on data (a Dataset, or a view of some of
  // its samples). on_epoch (optional) is called from
  // the calling thread after each epoch. stop (optional) is polled once per
  // mini-batch. progress (optional) is updated as mini-batches finish.
  // Throws fedsgd::Error if the data does not fit the model.
  TrainStats Train(Model& model, const DatasetView& data,
                   const std::function<void(const EpochReport&)>& on_epoch = {},
                   const std::atomic<bool>* stop = nullptr, TrainProgress* progress = nullptr);

  const TrainOptions& options() const { return options_; }

 private:
  TrainOptions options_;
};

}  // namespace fedsgd
