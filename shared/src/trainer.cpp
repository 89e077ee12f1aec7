// LocalTrainer: the hogwild and sync multithreaded SGD loops.
//
// Both modes walk the shard in epochs of a seeded random permutation, gather
// each mini-batch into a per-thread buffer (so the kernels see contiguous
// columns) and call ForwardBackward with a per-thread Workspace; nothing is
// allocated inside the loop.
//
//   hogwild: threads claim mini-batches from an atomic counter, take a
//            relaxed-atomic snapshot of the shared weights, compute the
//            gradient on it and write the step back with SgdStepShared.
//   sync:    a std::barrier separates the phases of each step: every thread
//            computes the gradient of its slice of the batch, then each
//            thread reduces one slice of the parameter vector over all
//            threads' gradients (in thread order, so the result does not
//            depend on timing) and applies the step to it.
//
// With FedProx (prox_mu > 0) the proximal gradient is added to the private
// gradient: in hogwild at the thread's weight snapshot (the point where the
// loss gradient was taken), in sync mode to the thread's own slice.
#include "fedsgd/trainer.h"

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "fedsgd/pacer.h"
#include "fedsgd/proximal_term.h"

namespace fedsgd {

TrainMode ParseTrainMode(std::string_view text) {
  if (text == "hogwild") return TrainMode::kHogwild;
  if (text == "sync") return TrainMode::kSync;
  throw Error("unknown training mode '" + std::string(text) + "' (expected hogwild or sync)");
}

std::string ToString(TrainMode mode) { return mode == TrainMode::kHogwild ? "hogwild" : "sync"; }

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Per-thread buffers: one gathered mini-batch and the scratch it needs.
struct ThreadBuffers {
  ThreadBuffers(const Architecture& arch, int max_batch)
      : workspace(arch, max_batch),
        x(static_cast<std::size_t>(arch.input_size()) * max_batch),
        y(max_batch),
        grad(arch.ParameterCount()) {}
  Workspace workspace;
  std::vector<float> x;
  std::vector<float> y;
  std::vector<float> grad;
  std::vector<float> weights;  // hogwild: private snapshot of the shared weights
};

// Copies samples order[begin, end) of data into buf.x / buf.y, converting
// byte features to floats on the way.
void Gather(const Dataset& data, const std::vector<std::size_t>& order, std::size_t begin,
            std::size_t end, ThreadBuffers& buf) {
  data.Gather(std::span(order).subspan(begin, end - begin), buf.x.data(), buf.y.data());
}

void CheckFits(const Architecture& arch, const DatasetView& data, const TrainOptions& opt) {
  if (data.size() == 0) throw Error("the training data set is empty");
  if (data.num_features() != arch.input_size()) {
    throw Error("the data has " + std::to_string(data.num_features()) + " features but model " +
                arch.ToString() + " expects " + std::to_string(arch.input_size()));
  }
  const int classes = arch.num_classes();
  if (classes > 0 && data.num_classes() > classes) {
    throw Error("the data has " + std::to_string(data.num_classes()) + " classes but model " +
                arch.ToString() + " has only " + std::to_string(classes) + " outputs");
  }
  if (classes > 0 && data.num_classes() == 0) {
    throw Error("model " + arch.ToString() +
                " is a classifier but the data has real-valued targets (regression)");
  }
  if (opt.threads < 1) throw Error("--threads must be at least 1");
  if (opt.batch < 1) throw Error("--batch must be at least 1");
  if (!(opt.epochs > 0) && opt.max_steps <= 0) throw Error("--epochs must be positive");
  if (!(opt.sgd.lr > 0) || !std::isfinite(opt.sgd.lr)) {
    throw Error("the learning rate must be a positive number");
  }
}

// Shared state of one training run, read by every worker.
struct RunPlan {
  const Architecture& arch;
  const Dataset& data;
  const TrainOptions& opt;
  const std::atomic<bool>* stop;
  TrainProgress* progress;
  std::size_t steps_per_epoch;
  long total_steps;
  const float* anchor;         // FedProx: the weights at the start; null when prox_mu == 0
  const float* logit_offsets;  // logit adjustment; null when off
  const float* class_weights;  // class weighting; null when off
  Pacer pacer;                 // --slowdown: straggler simulation
};

bool StopRequested(const std::atomic<bool>* stop) {
  return stop != nullptr && stop->load(std::memory_order_relaxed);
}

// One hogwild epoch over `order`: steps [first_step, first_step + steps).
// Returns the summed mini-batch loss and the number of batches done.
struct EpochResult {
  double loss_sum = 0;
  long batches = 0;
  std::size_t samples = 0;
  bool stopped = false;
};

EpochResult HogwildEpoch(const RunPlan& run, Model& model, const std::vector<std::size_t>& order,
                         long first_step, long steps, std::vector<ThreadBuffers>& buffers,
                         std::vector<float>& velocity, std::vector<std::mt19937_64>& rngs) {
  const int threads = static_cast<int>(buffers.size());
  const std::size_t n = order.size();
  const std::size_t batch = run.opt.batch;
  std::atomic<long> next{0};
  std::vector<EpochResult> results(threads);
  float* shared = model.params.data();
  float* shared_velocity = velocity.empty() ? nullptr : velocity.data();
  const std::size_t count = model.params.size();
  const bool dropout = run.arch.dropout > 0;

  auto worker = [&](int t) {
    ThreadBuffers& buf = buffers[t];
    EpochResult& r = results[t];
    for (;;) {
      if (StopRequested(run.stop)) {
        r.stopped = true;
        return;
      }
      const long b = next.fetch_add(1, std::memory_order_relaxed);
      if (b >= steps) return;
      const auto batch_start = std::chrono::steady_clock::now();
      const std::size_t begin = static_cast<std::size_t>(b) * batch;
      const std::size_t end = std::min(begin + batch, n);
      Gather(run.data, order, begin, end, buf);
      LoadShared(shared, buf.weights.data(), count);
      const int rows = static_cast<int>(end - begin);
      const float loss =
          ForwardBackward(run.arch, buf.weights.data(), buf.x.data(), buf.y.data(), rows,
                          buf.grad.data(), buf.workspace, dropout ? &rngs[t] : nullptr,
                          run.logit_offsets, run.class_weights, run.opt.frozen);
      // Frozen parameters (the first `frozen`) are read, never written, and
      // their gradient is not computed.
      const std::size_t f = run.opt.frozen;
      if (run.anchor) {
        AddProximalGradient(buf.grad.data() + f, buf.weights.data() + f, run.anchor + f, count - f,
                            run.opt.prox_mu);
      }
      const auto lr = static_cast<float>(run.opt.sgd.schedule.Rate(run.opt.sgd.lr, first_step + b));
      SgdStepShared(shared + f, buf.grad.data() + f,
                    shared_velocity ? shared_velocity + f : nullptr, count - f, lr, run.opt.sgd);
      r.loss_sum += loss;
      r.batches += 1;
      r.samples += end - begin;
      if (run.progress) run.progress->samples.fetch_add(end - begin, std::memory_order_relaxed);
      run.pacer.After(SecondsSince(batch_start));
    }
  };

  std::vector<std::jthread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  pool.clear();  // joins

  EpochResult total;
  for (const EpochResult& r : results) {
    total.loss_sum += r.loss_sum;
    total.batches += r.batches;
    total.samples += r.samples;
    total.stopped = total.stopped || r.stopped;
  }
  return total;
}

EpochResult SyncEpoch(const RunPlan& run, Model& model, const std::vector<std::size_t>& order,
                      long first_step, long steps, std::vector<ThreadBuffers>& buffers,
                      std::vector<float>& velocity, std::vector<std::mt19937_64>& rngs,
                      std::vector<float>& batch_grad) {
  const std::size_t n = order.size();
  const std::size_t batch = run.opt.batch;
  const std::size_t count = model.params.size();
  // More threads than samples in a batch would leave threads idle.
  const int threads = static_cast<int>(std::min<std::size_t>(buffers.size(), batch));
  const bool dropout = run.arch.dropout > 0;

  std::vector<float> losses(threads, 0.0f);
  std::vector<std::size_t> rows(threads, 0);
  EpochResult total;
  long step = 0;      // written only in the barrier's completion step
  bool stop = false;  // likewise

  // Runs once per phase with every thread waiting: a safe place for the
  // bookkeeping that all threads then read.
  int phase = 0;
  auto step_start = std::chrono::steady_clock::now();  // likewise
  auto on_phase = [&]() noexcept {
    if (phase == 1) {  // the gradients are reduced and applied: step done
      run.pacer.After(SecondsSince(step_start));
      std::size_t batch_rows = 0;
      double loss = 0;
      for (int t = 0; t < threads; ++t) {
        batch_rows += rows[t];
        loss += static_cast<double>(losses[t]) * static_cast<double>(rows[t]);
      }
      total.loss_sum += loss / static_cast<double>(batch_rows);
      total.batches += 1;
      total.samples += batch_rows;
      if (run.progress) run.progress->samples.fetch_add(batch_rows, std::memory_order_relaxed);
      step += 1;
      step_start = std::chrono::steady_clock::now();
      if (StopRequested(run.stop) && step < steps) {
        stop = true;
        total.stopped = true;
      }
    }
    phase ^= 1;
  };
  std::barrier sync(threads, on_phase);

  auto worker = [&](int t) {
    ThreadBuffers& buf = buffers[t];
    // Each thread steps one slice of the trainable parameters (after the
    // first `frozen`).
    const std::size_t f = run.opt.frozen;
    const std::size_t slice_begin = f + (count - f) * t / threads;
    const std::size_t slice_end = f + (count - f) * (t + 1) / threads;
    while (step < steps && !stop) {
      const std::size_t begin = static_cast<std::size_t>(step) * batch;
      const std::size_t end = std::min(begin + batch, n);
      const std::size_t size = end - begin;
      const std::size_t my_begin = begin + size * t / threads;
      const std::size_t my_end = begin + size * (t + 1) / threads;
      rows[t] = my_end - my_begin;
      if (rows[t] > 0) {
        Gather(run.data, order, my_begin, my_end, buf);
        losses[t] = ForwardBackward(run.arch, model.params.data(), buf.x.data(), buf.y.data(),
                                    static_cast<int>(rows[t]), buf.grad.data(), buf.workspace,
                                    dropout ? &rngs[t] : nullptr, run.logit_offsets,
                                    run.class_weights, run.opt.frozen);
      } else {
        losses[t] = 0;
      }
      sync.arrive_and_wait();  // all gradients ready; nobody reads the weights now
      // Each thread owns one slice of the parameters: mean gradient over the
      // batch = sum over threads of (rows_t / size) * grad_t, in thread order.
      float* g = batch_grad.data();
      for (std::size_t i = slice_begin; i < slice_end; ++i) g[i] = 0.0f;
      for (int u = 0; u < threads; ++u) {
        if (rows[u] == 0) continue;
        const float w = static_cast<float>(rows[u]) / static_cast<float>(size);
        const float* gu = buffers[u].grad.data();
        for (std::size_t i = slice_begin; i < slice_end; ++i) g[i] += w * gu[i];
      }
      if (run.anchor) {
        AddProximalGradient(g + slice_begin, model.params.data() + slice_begin,
                            run.anchor + slice_begin, slice_end - slice_begin, run.opt.prox_mu);
      }
      const auto lr =
          static_cast<float>(run.opt.sgd.schedule.Rate(run.opt.sgd.lr, first_step + step));
      SgdStep(model.params.data() + slice_begin, g + slice_begin,
              velocity.empty() ? nullptr : velocity.data() + slice_begin, slice_end - slice_begin,
              lr, run.opt.sgd);
      sync.arrive_and_wait();  // step applied; on_phase advanced `step`
    }
  };

  std::vector<std::jthread> pool;
  pool.reserve(threads - 1);
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker, t);
  worker(0);
  pool.clear();
  return total;
}

}  // namespace

LocalTrainer::LocalTrainer(TrainOptions options) : options_(std::move(options)) {}

TrainStats LocalTrainer::Train(Model& model, const DatasetView& data,
                               const std::function<void(const EpochReport&)>& on_epoch,
                               const std::atomic<bool>* stop, TrainProgress* progress) {
  const TrainOptions& opt = options_;
  CheckFits(model.arch, data, opt);
  if (model.params.size() != model.arch.ParameterCount()) {
    throw Error("the model has " + std::to_string(model.params.size()) +
                " parameters but its architecture needs " +
                std::to_string(model.arch.ParameterCount()));
  }

  const std::size_t n = data.size();
  const std::size_t batch = static_cast<std::size_t>(opt.batch);
  if (!std::isfinite(opt.prox_mu) || opt.prox_mu < 0) {
    throw Error("the FedProx mu (prox_mu) must be >= 0");
  }
  if (!std::isfinite(opt.slowdown) || opt.slowdown < 1) {
    throw Error("the slowdown (--slowdown) must be >= 1");
  }
  if (opt.frozen >= model.params.size()) {
    throw Error("frozen parameters (" + std::to_string(opt.frozen) +
                ") leave nothing of the model's " + std::to_string(model.params.size()) +
                " to train");
  }
  if (!std::isfinite(opt.logit_adjustment) || opt.logit_adjustment < 0) {
    throw Error("the logit adjustment tau (logit_adjustment) must be >= 0");
  }
  // Allocated once here, read-only during training.
  const std::vector<float> anchor = opt.prox_mu > 0 ? model.params : std::vector<float>();
  const std::vector<float> offsets =
      opt.logit_adjustment > 0 && model.arch.loss() == LossKind::kCrossEntropy
          ? LogitOffsets(data, model.arch.num_classes(), opt.logit_adjustment)
          : std::vector<float>();
  const std::vector<float> class_weights =
      opt.class_weighting == ClassWeighting::kInverseFrequency &&
              model.arch.loss() == LossKind::kCrossEntropy
          ? ClassWeights(data, model.arch.num_classes())
          : std::vector<float>();
  RunPlan run{model.arch,
              data.data(),
              opt,
              stop,
              progress,
              (n + batch - 1) / batch,
              0,
              anchor.empty() ? nullptr : anchor.data(),
              offsets.empty() ? nullptr : offsets.data(),
              class_weights.empty() ? nullptr : class_weights.data(),
              Pacer(opt.slowdown, stop)};
  run.total_steps =
      opt.epochs > 0
          ? static_cast<long>(std::ceil(opt.epochs * static_cast<double>(run.steps_per_epoch)))
          : std::numeric_limits<long>::max();
  if (opt.max_steps > 0) run.total_steps = std::min(run.total_steps, opt.max_steps);
  if (progress) {
    double planned = static_cast<double>(run.total_steps) * static_cast<double>(batch);
    if (opt.epochs > 0) planned = std::min(planned, std::ceil(opt.epochs * static_cast<double>(n)));
    progress->samples.store(0, std::memory_order_relaxed);
    progress->total_samples.store(static_cast<std::uint64_t>(planned), std::memory_order_relaxed);
  }

  const int threads = opt.threads;
  const int max_rows =
      opt.mode == TrainMode::kSync ? static_cast<int>((batch + threads - 1) / threads) : opt.batch;
  std::vector<ThreadBuffers> buffers;
  buffers.reserve(threads);
  std::vector<std::mt19937_64> rngs;
  for (int t = 0; t < threads; ++t) {
    buffers.emplace_back(model.arch, max_rows);
    if (opt.mode == TrainMode::kHogwild) buffers.back().weights.resize(model.params.size());
    rngs.emplace_back(opt.seed * 0x9E3779B97F4A7C15ULL + 1000 + t);
  }
  std::vector<float> velocity(opt.sgd.momentum != 0 ? model.params.size() : 0, 0.0f);
  std::vector<float> batch_grad(opt.mode == TrainMode::kSync ? model.params.size() : 0);

  // The epochs' permutations are of the view's rows, so the workers index
  // the data set directly.
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = data.row(i);
  std::mt19937_64 shuffle_rng(opt.seed);

  TrainStats stats;
  const auto start = Clock::now();
  double previous_loss = std::numeric_limits<double>::quiet_NaN();
  long done = 0;
  while (done < run.total_steps) {
    const auto epoch_start = Clock::now();
    std::shuffle(order.begin(), order.end(), shuffle_rng);
    const long steps = std::min<long>(run.steps_per_epoch, run.total_steps - done);
    EpochResult r =
        opt.mode == TrainMode::kHogwild
            ? HogwildEpoch(run, model, order, done, steps, buffers, velocity, rngs)
            : SyncEpoch(run, model, order, done, steps, buffers, velocity, rngs, batch_grad);
    done += r.batches;
    stats.epochs += 1;
    stats.steps += r.batches;
    stats.samples += r.samples;
    if (r.batches > 0) stats.train_loss = r.loss_sum / static_cast<double>(r.batches);
    if (on_epoch && r.batches > 0) {
      on_epoch(
          EpochReport{stats.epochs, stats.train_loss, SecondsSince(epoch_start), stats.samples});
    }
    if (r.stopped) {
      stats.stopped = true;
      break;
    }
    if (r.batches < steps) break;  // defensive: no progress possible
    if (opt.early_stop_delta > 0 && std::isfinite(previous_loss) &&
        std::abs(previous_loss - stats.train_loss) < opt.early_stop_delta) {
      stats.early_stopped = true;
      break;
    }
    previous_loss = stats.train_loss;
  }
  stats.seconds = SecondsSince(start);
  return stats;
}

}  // namespace fedsgd
