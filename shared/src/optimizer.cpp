// SGD kernels and learning-rate schedules (see optimizer.h).
#include "fedsgd/optimizer.h"

#include <atomic>
#include <charconv>
#include <cmath>
#include <string>
#include <vector>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

[[noreturn]] void BadSchedule(std::string_view text, const std::string& why) {
  throw Error("invalid learning-rate schedule '" + std::string(text) + "': " + why +
              " (expected constant, step:S:G, exp:G or inv:G[:P])");
}

double Number(std::string_view full, std::string_view s) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    BadSchedule(full, "'" + std::string(s) + "' is not a number");
  }
  return v;
}

// Shortest text that reads back as the same double ("exp:0.99", not
// "exp:0.98999999999999999"), so Parse(ToString()) gives the same schedule.
std::string Shortest(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

inline float Sign(float w) { return static_cast<float>((w > 0.0f) - (w < 0.0f)); }

}  // namespace

LrSchedule LrSchedule::Parse(std::string_view text) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t end = text.find(':', start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  LrSchedule s;
  const std::string_view kind = parts[0];
  if (kind == "constant") {
    if (parts.size() != 1) BadSchedule(text, "constant takes no values");
  } else if (kind == "step") {
    if (parts.size() != 3) BadSchedule(text, "step takes S:G");
    s.kind = Kind::kStep;
    const double size = Number(text, parts[1]);
    // Bounded so that the conversion to long is defined (a fuzzer sent 1.6e57).
    if (!(size >= 1 && size <= 1e9) || size != std::floor(size)) {
      BadSchedule(text, "S must be a whole number in [1, 1e9]");
    }
    s.step_size = static_cast<long>(size);
    s.gamma = Number(text, parts[2]);
    if (!(s.gamma > 0 && s.gamma <= 1)) BadSchedule(text, "G must be in (0, 1]");
  } else if (kind == "exp") {
    if (parts.size() != 2) BadSchedule(text, "exp takes G");
    s.kind = Kind::kExponential;
    s.gamma = Number(text, parts[1]);
    if (!(s.gamma > 0 && s.gamma <= 1)) BadSchedule(text, "G must be in (0, 1]");
  } else if (kind == "inv") {
    if (parts.size() != 2 && parts.size() != 3) BadSchedule(text, "inv takes G[:P]");
    s.kind = Kind::kInverseTime;
    s.gamma = Number(text, parts[1]);
    if (!(s.gamma >= 0)) BadSchedule(text, "G must be >= 0");
    if (parts.size() == 3) s.power = Number(text, parts[2]);
    if (!(s.power > 0)) BadSchedule(text, "P must be > 0");
  } else {
    BadSchedule(text, "unknown kind");
  }
  return s;
}

std::string LrSchedule::ToString() const {
  switch (kind) {
    case Kind::kConstant:
      return "constant";
    case Kind::kStep:
      return "step:" + std::to_string(step_size) + ":" + Shortest(gamma);
    case Kind::kExponential:
      return "exp:" + Shortest(gamma);
    case Kind::kInverseTime:
      return "inv:" + Shortest(gamma) + (power == 1.0 ? "" : ":" + Shortest(power));
  }
  return "constant";
}

double LrSchedule::Rate(double base_lr, long step) const {
  const double t = static_cast<double>(step);
  switch (kind) {
    case Kind::kConstant:
      return base_lr;
    case Kind::kStep:
      return base_lr * std::pow(gamma, std::floor(t / static_cast<double>(step_size)));
    case Kind::kExponential:
      return base_lr * std::pow(gamma, t);
    case Kind::kInverseTime:
      return base_lr / std::pow(1.0 + gamma * t, power);
  }
  return base_lr;
}

void SgdStep(float* w, const float* g, float* v, std::size_t n, float lr, const SgdOptions& o) {
  const float wd = o.weight_decay, l1 = o.l1, mu = o.momentum;
  if (mu != 0.0f && v != nullptr) {
    for (std::size_t i = 0; i < n; ++i) {
      const float gi = g[i] + wd * w[i] + l1 * Sign(w[i]);
      v[i] = mu * v[i] + gi;
      w[i] -= lr * v[i];
    }
  } else if (wd != 0.0f || l1 != 0.0f) {
    for (std::size_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i] + l1 * Sign(w[i]));
  } else {
    for (std::size_t i = 0; i < n; ++i) w[i] -= lr * g[i];
  }
}

namespace {

// The shared step, compiled once per combination of active terms so the
// common case (plain SGD) is a load, a fused multiply-add and a store per
// weight: relaxed atomics cannot be vectorised, so every instruction in this
// loop counts (see bench/network_bench.cpp: BM_SgdStepShared).
template <bool kMomentum, bool kRegularise>
void SharedStepLoop(float* w, const float* g, float* v, std::size_t n, float lr,
                    const SgdOptions& o) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  const float wd = o.weight_decay, l1 = o.l1, mu = o.momentum;
  // A load and a store, not a compare-and-swap loop: hogwild accepts that a
  // concurrent update to the same weight is occasionally lost. Unrolled:
  // atomics are never vectorised, and rolled, the loop's own bookkeeping
  // was half the instructions (36 -> 28 us per step for 101,770 weights).
#pragma GCC unroll 8
  for (std::size_t i = 0; i < n; ++i) {
    std::atomic_ref<float> wi(w[i]);
    const float wv = wi.load(kRelaxed);
    float step = g[i];
    if constexpr (kRegularise) step += wd * wv + l1 * Sign(wv);
    if constexpr (kMomentum) {
      std::atomic_ref<float> vi(v[i]);
      step += mu * vi.load(kRelaxed);
      vi.store(step, kRelaxed);
    }
    wi.store(wv - lr * step, kRelaxed);
  }
}

}  // namespace

void SgdStepShared(float* w, const float* g, float* v, std::size_t n, float lr,
                   const SgdOptions& o) {
  const bool momentum = o.momentum != 0.0f && v != nullptr;
  const bool regularise = o.weight_decay != 0.0f || o.l1 != 0.0f;
  if (momentum) {
    regularise ? SharedStepLoop<true, true>(w, g, v, n, lr, o)
               : SharedStepLoop<true, false>(w, g, v, n, lr, o);
  } else {
    regularise ? SharedStepLoop<false, true>(w, g, v, n, lr, o)
               : SharedStepLoop<false, false>(w, g, v, n, lr, o);
  }
}

void LoadShared(float* shared, float* out, std::size_t n) {
  // Unrolled as the shared step is (24 -> 13 us for 101,770 floats).
#pragma GCC unroll 8
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = std::atomic_ref<float>(shared[i]).load(std::memory_order_relaxed);
  }
}

}  // namespace fedsgd
