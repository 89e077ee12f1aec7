// Aggregation rules (see aggregator.h).
#include "aggregator.h"

#include <algorithm>
#include <cassert>
#include <limits>

#include "fedsgd/error.h"
#include "krum_aggregator.h"
#include "median_aggregator.h"
#include "norm_bounding_aggregator.h"
#include "trimmed_mean_aggregator.h"

namespace fedsgd {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

bool RuleBuffers(const std::string& rule) { return rule != "mean"; }

bool NormBoundBuffers(const Plan& plan) {
  return NormBound::Parse(plan.norm_bound).kind == NormBound::Kind::kAdaptive;
}

// The budget of each buffer: the plan's limit, shared when the adaptive
// bound's first-round buffer and a buffering rule both hold the round.
double BudgetPerBuffer(const Plan& plan) {
  const int buffers = (RuleBuffers(plan.aggregator) ? 1 : 0) + (NormBoundBuffers(plan) ? 1 : 0);
  return plan.aggregation_memory_mb * kMiB / std::max(buffers, 1);
}

}  // namespace

nlohmann::json AggregationStats::ToJson() const {
  nlohmann::json j = {{"rule", rule},          {"updates", updates},
                      {"norm_bound", nullptr}, {"median_norm", nullptr},
                      {"clipped", clipped},    {"weight_capped", weight_capped},
                      {"excluded", excluded}};
  if (norm_bound) j["norm_bound"] = *norm_bound;
  if (median_norm) j["median_norm"] = *median_norm;
  if (!note.empty()) j["note"] = note;
  return j;
}

void WeightedMeanAggregator::Begin(std::size_t size) {
  sum_.assign(size, 0.0);
  total_weight_ = 0;
  count_ = 0;
}

void WeightedMeanAggregator::Add(std::span<const float> update, double weight) {
  assert(update.size() == sum_.size() && weight > 0);
  double* s = sum_.data();
  const float* u = update.data();
  const std::size_t n = sum_.size();
  for (std::size_t i = 0; i < n; ++i) s[i] += weight * u[i];  // vectorised: bandwidth-bound
  total_weight_ += weight;
  ++count_;
}

void WeightedMeanAggregator::Finish(std::span<float> out) {
  assert(count_ > 0 && out.size() == sum_.size());
  const double scale = 1.0 / total_weight_;
  constexpr double kMax = std::numeric_limits<float>::max();
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::size_t i = 0; i < sum_.size(); ++i) {
    const double mean = sum_[i] * scale;
    // Converting a double beyond the float range is undefined: say Inf.
    out[i] = mean > kMax ? kInf : mean < -kMax ? -kInf : static_cast<float>(mean);
  }
}

AggregationStats WeightedMeanAggregator::stats() const {
  AggregationStats s;
  s.rule = name();
  s.updates = count_;
  return s;
}

std::unique_ptr<Aggregator> MakeRule(const Plan& plan) {
  const double budget = BudgetPerBuffer(plan);
  const std::string& rule = plan.aggregator;
  if (rule == "mean") return std::make_unique<WeightedMeanAggregator>();
  if (rule == "median") return std::make_unique<MedianAggregator>(budget);
  if (rule == "trimmed_mean")
    return std::make_unique<TrimmedMeanAggregator>(plan.trim_fraction, budget);
  if (rule == "krum" || rule == "multi_krum") {
    return std::make_unique<KrumAggregator>(rule == "multi_krum", plan.byzantine, plan.krum_select,
                                            budget);
  }
  throw Error("unknown aggregation rule '" + rule +
              "' (--aggregator: mean, median, trimmed_mean, krum or multi_krum)");
}

std::unique_ptr<Aggregator> MakeAggregator(std::string_view name) {
  Plan plan;
  plan.aggregator = std::string(name);
  plan.norm_bound = "off";
  return MakeRule(plan);
}

std::unique_ptr<Aggregator> MakeAggregator(const Plan& plan) {
  plan.Validate();
  return std::make_unique<NormBoundingAggregator>(MakeRule(plan), NormBound::Parse(plan.norm_bound),
                                                  plan.max_device_weight, BudgetPerBuffer(plan));
}

double AggregationBufferBytes(const Plan& plan, std::size_t updates, std::size_t parameters) {
  const int buffers = (RuleBuffers(plan.aggregator) ? 1 : 0) + (NormBoundBuffers(plan) ? 1 : 0);
  return static_cast<double>(buffers) * static_cast<double>(updates) *
         static_cast<double>(parameters) * sizeof(float);
}

}  // namespace fedsgd
