// Kernel micro-benchmarks (Google Benchmark), each beside its reference:
//   ForwardBackward of MLP 784-128-10 at batch 32   vs  Eigen GEMM of the same shapes
//   the same with its first layer frozen (fine-tuning: no gradient computed for it)
//   ForwardBackward of cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10 at batch 32
//                                                   vs  Eigen GEMM of its conv2 product
//   one hogwild step (snapshot, ForwardBackward, shared SGD step) on 1 and 2 threads
//   SgdStepShared (std::atomic_ref, relaxed)        vs  SgdStep (plain, vectorised)
//   LoadShared (relaxed atomic snapshot)            vs  memcpy
//   WeightedMeanAggregator::Add (coordinator)       vs  a streaming read+write (bandwidth)
//   the trainer's mini-batch gather from float and from byte (IDX) features,
//   to set beside one ForwardBackward step
//
// The forward/backward benchmarks also count heap allocations per step
// (counter "allocs"; it must be 0): this program is linked with
// -Wl,--wrap=malloc,--wrap=_Znwm, so every call to malloc or operator new
// from fedsgd's code (Eigen's included) lands in a counting wrapper below.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "aggregator.h"
#include "fedsgd/dataset.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "fedsgd/optimizer.h"

// Heap allocations made by this thread (thread-local, so Google Benchmark's
// own threads do not count).
thread_local long t_allocations = 0;

extern "C" {
void* __real_malloc(std::size_t size);
void* __wrap_malloc(std::size_t size) {
  ++t_allocations;
  return __real_malloc(size);
}
// operator new(std::size_t), by its mangled name.
void* __real__Znwm(std::size_t size);
void* __wrap__Znwm(std::size_t size) {
  ++t_allocations;
  return __real__Znwm(size);
}
}

namespace fedsgd {
namespace {

constexpr int kBatch = 32;

// FLOPs of one SGD step per sample on 784-128-10: forward 2*(784*128 + 128*10),
// backward dW1 = 2*784*128 (the input gradient is skipped), dW2 + dA1 = 4*128*10;
// in all 2*(784*128*2 + 128*10*3) = 409,088 FLOPs per sample (bias, activation
// and softmax work, O(128 + 10) per sample, is left out).
constexpr double kFlopsPerSample = 2.0 * (784 * 128 + 128 * 10) + 2.0 * 784 * 128 + 4.0 * 128 * 10;

std::vector<float> Random(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// One batch of 784-128-10 (MNIST-shaped) samples with labels.
struct Batch {
  std::vector<float> x = Random(784 * kBatch, 1);
  std::vector<float> y = [] {
    std::vector<float> labels(kBatch);
    for (int i = 0; i < kBatch; ++i) labels[i] = static_cast<float>(i % 10);
    return labels;
  }();
};

// ForwardBackward of mlp:784-128-10 at batch 32; state.range(0) = 1 turns
// on dropout (0.2, with an RNG) to price the masks.
void BM_ForwardBackward(benchmark::State& state) {
  const bool dropout = state.range(0) == 1;
  const Architecture arch =
      Architecture::Parse(dropout ? "mlp:784-128-10:relu:dropout=0.2" : "mlp:784-128-10");
  const Model m = Model::Create(arch, 1);
  const Batch b;
  Workspace ws(arch, kBatch);
  std::vector<float> grad(arch.ParameterCount());
  std::mt19937_64 rng(1);
  std::mt19937_64* mask_rng = dropout ? &rng : nullptr;
  // Allocations of one step, after a warm-up step.
  ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws, mask_rng);
  const long before = t_allocations;
  ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws, mask_rng);
  state.counters["allocs"] = static_cast<double>(t_allocations - before);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch,
                                             grad.data(), ws, mask_rng));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP/s"] =
      benchmark::Counter(kFlopsPerSample * kBatch / 1e9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ForwardBackward)->ArgName("dropout")->Arg(0)->Arg(1);

// Fine-tuning (--freeze-layers 1): ForwardBackward of mlp:784-128-10 at batch
// 32 with its first layer frozen, so the backward pass computes the output
// layer's gradient only; beside BM_ForwardBackward/dropout:0, it prices what
// skipping the frozen layer saves.
void BM_ForwardBackwardFrozenFirstLayer(benchmark::State& state) {
  const Architecture arch = Architecture::Parse("mlp:784-128-10");
  const std::size_t frozen = arch.Layout()[1].weight_offset;
  const Model m = Model::Create(arch, 1);
  const Batch b;
  Workspace ws(arch, kBatch);
  std::vector<float> grad(arch.ParameterCount());
  for (auto _ : state) {
    benchmark::DoNotOptimize(ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch,
                                             grad.data(), ws, nullptr, nullptr, nullptr, frozen));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_ForwardBackwardFrozenFirstLayer);

// Dataset::Gather of one batch of 32 random rows of a 15,000-sample
// 784-feature shard into the trainer's buffers: state.range(0) = 1 holds the
// features as bytes (IDX pixels, converted to floats on the way), 0 as
// floats (copied). The conversion must cost little next to a step.
void BM_Gather(benchmark::State& state) {
  const bool bytes = state.range(0) == 1;
  constexpr std::size_t kSamples = 15000;
  Dataset data;
  data.num_features = 784;
  data.num_classes = 10;
  std::mt19937 rng(3);
  if (bytes) {
    data.bytes.resize(kSamples * 784);
    for (std::uint8_t& v : data.bytes) v = static_cast<std::uint8_t>(rng());
  } else {
    data.x = Random(kSamples * 784, 3);
  }
  data.y.assign(kSamples, 1.0f);
  std::vector<std::size_t> order(kSamples);
  for (std::size_t i = 0; i < kSamples; ++i) order[i] = (i * 7919) % kSamples;
  std::vector<float> x(784 * kBatch), y(kBatch);
  std::size_t at = 0;
  const long before = t_allocations;
  data.Gather(std::span(order).subspan(0, kBatch), x.data(), y.data());
  state.counters["allocs"] = static_cast<double>(t_allocations - before);
  for (auto _ : state) {
    data.Gather(std::span(order).subspan(at, kBatch), x.data(), y.data());
    benchmark::ClobberMemory();
    at = at + 2 * kBatch < kSamples ? at + kBatch : 0;
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Gather)->ArgName("bytes")->Arg(0)->Arg(1);

// Evaluation-only forward pass at the same shape.
void BM_Score(benchmark::State& state) {
  const Architecture arch = Architecture::Parse("mlp:784-128-10");
  const Model m = Model::Create(arch, 1);
  const Batch b;
  Workspace ws(arch, kBatch);
  Score(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, ws);
  const long before = t_allocations;
  Score(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, ws);
  state.counters["allocs"] = static_cast<double>(t_allocations - before);
  for (auto _ : state) {
    benchmark::DoNotOptimize(Score(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, ws));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_Score);

// What a hogwild trainer thread does per mini-batch: snapshot the shared
// weights, ForwardBackward on the snapshot, SgdStepShared into the shared
// weights. On 1 and 2 threads (real time, so items/s is the total rate):
// the project's target is >= 110k samples/s on 2 threads.
void BM_HogwildStep(benchmark::State& state) {
  static const Architecture arch = Architecture::Parse("mlp:784-128-10");
  static std::vector<float> shared = Model::Create(arch, 1).params;
  const Batch b;
  Workspace ws(arch, kBatch);
  std::vector<float> weights(shared.size()), grad(shared.size());
  const SgdOptions o;
  for (auto _ : state) {
    LoadShared(shared.data(), weights.data(), shared.size());
    ForwardBackward(arch, weights.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws);
    SgdStepShared(shared.data(), grad.data(), nullptr, shared.size(), 1e-4f, o);
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}
BENCHMARK(BM_HogwildStep)->Threads(1)->Threads(2)->UseRealTime();

// The machine's matrix-multiply speed for the step's two big products.
void BM_Gemm(benchmark::State& state) {
  const bool forward = state.range(0) == 0;
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(128, 784);
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(784, kBatch);
  Eigen::MatrixXf d = Eigen::MatrixXf::Random(128, kBatch);
  Eigen::MatrixXf z(128, kBatch), dw(128, 784);
  // The expression form heap-allocates its packing buffers per product
  // (which is why network.cpp calls the GEMM kernel with its own).
  const long before = t_allocations;
  if (forward) {
    z.noalias() = w * a;
  } else {
    dw.noalias() = d * a.transpose();
  }
  state.counters["allocs"] = static_cast<double>(t_allocations - before);
  for (auto _ : state) {
    if (forward) {
      z.noalias() = w * a;  // Z = W A
      benchmark::DoNotOptimize(z.data());
    } else {
      dw.noalias() = d * a.transpose();  // dW = dZ A^T
      benchmark::DoNotOptimize(dw.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetLabel(forward ? "128x784 * 784x32" : "128x32 * 32x784");
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * 128 * 784 * kBatch / 1e9 * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gemm)->Arg(0)->Arg(1);

// The benchmark cnn (bench/cnn_vs_pytorch.sh) and its FLOPs per sample of
// one SGD step: per convolution 2 * out * K*K*C_in * positions for the
// forward product, the same for the weight gradient and (all but the first)
// for the input gradient; per dense layer 2 * in * out, three times. im2col,
// pooling, bias, ReLU and softmax (O(feature map)) are left out.
constexpr const char* kCnn = "cnn:1x28x28-c16k5-p2-c32k5-p2-f128-10";
constexpr double kCnnFlopsPerSample = 2.0 * (2.0 * 16 * 25 * 576) + 3.0 * (2.0 * 32 * 400 * 64) +
                                      3.0 * (2.0 * 512 * 128) + 3.0 * (2.0 * 128 * 10);

// ForwardBackward of the benchmark cnn at batch 32 (Fashion-MNIST shaped
// random images), with its heap allocations per step.
void BM_CnnForwardBackward(benchmark::State& state) {
  const Architecture arch = Architecture::Parse(kCnn);
  const Model m = Model::Create(arch, 1);
  const Batch b;
  Workspace ws(arch, kBatch);
  std::vector<float> grad(arch.ParameterCount());
  ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws);
  const long before = t_allocations;
  ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws);
  state.counters["allocs"] = static_cast<double>(t_allocations - before);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        ForwardBackward(arch, m.params.data(), b.x.data(), b.y.data(), kBatch, grad.data(), ws));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["GFLOP/s"] = benchmark::Counter(
      kCnnFlopsPerSample * kBatch / 1e9 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CnnForwardBackward);

// The machine's matrix-multiply speed for the cnn's largest product, conv2's
// forward pass at batch 32: W (32 x 400) * P (400 x 32*64 positions).
void BM_GemmConv(benchmark::State& state) {
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(32, 400);
  Eigen::MatrixXf p = Eigen::MatrixXf::Random(400, 64 * kBatch);
  Eigen::MatrixXf z(32, 64 * kBatch);
  for (auto _ : state) {
    z.noalias() = w * p;
    benchmark::DoNotOptimize(z.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel("32x400 * 400x2048");
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * 32 * 400 * 64 * kBatch / 1e9 * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_GemmConv);

constexpr std::size_t kParams = 101770;

void BM_SgdStep(benchmark::State& state) {
  std::vector<float> w = Random(kParams, 1), g = Random(kParams, 2);
  SgdOptions o;
  for (auto _ : state) {
    SgdStep(w.data(), g.data(), nullptr, kParams, 1e-6f, o);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kParams));
}
BENCHMARK(BM_SgdStep);

void BM_SgdStepShared(benchmark::State& state) {
  std::vector<float> w = Random(kParams, 1), g = Random(kParams, 2);
  SgdOptions o;
  for (auto _ : state) {
    SgdStepShared(w.data(), g.data(), nullptr, kParams, 1e-6f, o);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kParams));
}
BENCHMARK(BM_SgdStepShared);

void BM_Memcpy(benchmark::State& state) {
  std::vector<float> w = Random(kParams, 1), out(kParams);
  for (auto _ : state) {
    std::memcpy(out.data(), w.data(), kParams * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kParams));
}
BENCHMARK(BM_Memcpy);

void BM_LoadShared(benchmark::State& state) {
  std::vector<float> w = Random(kParams, 1), out(kParams);
  for (auto _ : state) {
    LoadShared(w.data(), out.data(), kParams);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(kParams));
}
BENCHMARK(BM_LoadShared);

// Coordinator aggregation over a model of state.range(0) floats, against a
// plain streaming a += b over the same memory (what the hardware allows).
void BM_AggregateAdd(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> u = Random(n, 3);
  WeightedMeanAggregator agg;
  agg.Begin(n);
  for (auto _ : state) {
    agg.Add(u, 100.0);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float) * 3));
}
BENCHMARK(BM_AggregateAdd)->Arg(101770)->Arg(10 << 20);

void BM_StreamAdd(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const std::vector<float> u = Random(n, 3);
  std::vector<float> s(n);
  for (auto _ : state) {
    for (std::size_t i = 0; i < n; ++i) s[i] += u[i];
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float) * 3));
}
BENCHMARK(BM_StreamAdd)->Arg(101770)->Arg(10 << 20);

}  // namespace
}  // namespace fedsgd

BENCHMARK_MAIN();
