// Aggregation time per rule for 10 updates of 101,770 floats (the MLP
// 784-128-10): Begin + 10 x Add + Finish, as one round at the coordinator.
// Run: build/bench/fedsgd_aggregation_bench
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "aggregator.h"

namespace {

constexpr std::size_t kParameters = 101770;
constexpr int kUpdates = 10;

const std::vector<std::vector<float>>& Updates() {
  static const auto updates = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0, 0.01f);
    std::vector<std::vector<float>> u(kUpdates, std::vector<float>(kParameters));
    for (auto& row : u)
      for (float& x : row) x = normal(rng);
    return u;
  }();
  return updates;
}

void BM_Aggregate(benchmark::State& state, const char* rule, const char* norm_bound) {
  fedsgd::Plan plan;
  plan.aggregator = rule;
  plan.byzantine = 2;
  plan.norm_bound = norm_bound;
  auto agg = fedsgd::MakeAggregator(plan);
  // A previous round's median norm, so the adaptive bound streams.
  agg->LoadState({{"norm_bound", {0.5}}});
  std::vector<float> out(kParameters);
  for (auto _ : state) {
    agg->Begin(kParameters);
    for (const auto& u : Updates()) agg->Add(u, 100);
    agg->Finish(out);
    benchmark::DoNotOptimize(out.data());
  }
}

BENCHMARK_CAPTURE(BM_Aggregate, mean_off, "mean", "off")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Aggregate, mean_adaptive, "mean", "adaptive:2")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Aggregate, median, "median", "off")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Aggregate, trimmed_mean, "trimmed_mean", "off")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Aggregate, krum, "krum", "off")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Aggregate, multi_krum, "multi_krum", "off")->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
