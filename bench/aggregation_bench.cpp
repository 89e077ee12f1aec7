// Aggregation time per rule for 10 updates of 101,770 floats (the MLP
// 784-128-10): Begin + 10 x Add + Finish, as one round at the coordinator.
// BM_DecodeAndAccumulate/<codec> adds what each update codec costs there:
// wire::Decode of the update message (header, validation, expansion to
// float32) + Add to the mean, reported as ns_per_update (issue 10: a
// compressed update must not cost more than an fp32 one).
// Run: build/bench/fedsgd_aggregation_bench
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "aggregator.h"
#include "fedsgd/update_codec.h"
#include "fedsgd/wire.h"

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

// The round's updates as the coordinator receives them, compressed with
// `codec` by the daemon's encoder.
std::vector<std::vector<zmq::message_t>> UpdateMessages(const fedsgd::wire::UpdateCodec& codec) {
  std::mt19937_64 rng(2);
  std::vector<std::vector<zmq::message_t>> messages;
  for (const auto& payload : Updates()) {
    fedsgd::wire::Update u;
    u.device = "dev" + std::to_string(messages.size());
    u.round = 7;
    u.model_version = 6;
    u.samples = 6000;
    u.loss = 0.4;
    if (codec.encoding == fedsgd::wire::TensorEncoding::kFp32) {
      u.payload = payload;
    } else {
      u.encoded = fedsgd::wire::EncodeTensor(codec, payload, rng);
    }
    messages.push_back(fedsgd::wire::Encode(std::move(u)));
  }
  return messages;
}

void BM_DecodeAndAccumulate(benchmark::State& state, const char* codec_text) {
  const auto codec = fedsgd::wire::UpdateCodec::Parse(codec_text);
  auto messages = UpdateMessages(codec);
  fedsgd::Plan plan;
  plan.norm_bound = "off";
  auto agg = fedsgd::MakeAggregator(plan);
  fedsgd::wire::Limits limits{kParameters};
  limits.update_encoding = codec.encoding;
  std::vector<float> out(kParameters);
  for (auto _ : state) {
    agg->Begin(kParameters);
    for (auto& frames : messages) {
      fedsgd::wire::DecodeResult r = fedsgd::wire::Decode(frames, limits);
      if (!r.ok()) {
        state.SkipWithError(r.error().detail.c_str());
        return;
      }
      agg->Add(std::get<fedsgd::wire::Update>(r.message()).payload, 6000);
    }
    agg->Finish(out);
    benchmark::DoNotOptimize(out.data());
  }
  // Time per update in ns: the inverse of updates per (1e-9) second.
  state.counters["ns_per_update"] = benchmark::Counter(
      kUpdates * 1e-9, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  std::size_t bytes = 0;
  for (const auto& frames : messages) bytes += frames[1].size();
  state.counters["tensor_bytes"] = static_cast<double>(bytes / messages.size());
}

BENCHMARK_CAPTURE(BM_DecodeAndAccumulate, fp32, "fp32")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_DecodeAndAccumulate, fp16, "fp16")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_DecodeAndAccumulate, int8, "int8")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_DecodeAndAccumulate, topk_0_01, "topk:0.01")->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
