// Plan: validation and JSON form (see plan.h).
#include "fedsgd/plan.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

#include "fedsgd/error.h"

namespace fedsgd {

Algorithm ParseAlgorithm(const std::string& text) {
  if (text == "fedavg") return Algorithm::kFedAvg;
  if (text == "fedsgd") return Algorithm::kFedSgd;
  throw Error("unknown algorithm '" + text + "' (expected fedavg or fedsgd)");
}

std::string ToString(Algorithm algorithm) {
  return algorithm == Algorithm::kFedAvg ? "fedavg" : "fedsgd";
}

DpClip ParseDpClip(const std::string& text) {
  DpClip c;
  std::string number = text;
  if (text == "adaptive") {
    c.adaptive = true;
    c.clip = kDefaultAdaptiveInitialClip;
    return c;
  }
  if (text.starts_with("adaptive:")) {
    c.adaptive = true;
    number = text.substr(9);
  }
  double value = 0;
  const auto r = std::from_chars(number.data(), number.data() + number.size(), value);
  if (r.ec != std::errc() || r.ptr != number.data() + number.size() || !std::isfinite(value) ||
      value <= 0) {
    throw Error("--dp-clip '" + text +
                "': expected a clip norm > 0, 'adaptive' or 'adaptive:INITIAL_NORM'");
  }
  c.clip = value;
  return c;
}

void Plan::Validate() const {
  architecture();  // throws for a bad model text
  auto require = [](bool ok, const std::string& what) {
    if (!ok) throw Error("invalid plan: " + what);
  };
  require(std::isfinite(local_epochs) && local_epochs >= 0, "local_epochs must be >= 0");
  require(local_steps >= 0, "local_steps must be >= 0");
  require(local_epochs > 0 || local_steps > 0 || algorithm == Algorithm::kFedSgd,
          "fedavg needs local_epochs > 0 or local_steps > 0");
  require(batch >= 1, "batch must be >= 1");
  require(std::isfinite(sgd.lr) && sgd.lr > 0, "lr must be > 0");
  require(std::isfinite(sgd.momentum) && sgd.momentum >= 0 && sgd.momentum < 1,
          "momentum must be in [0, 1)");
  require(std::isfinite(sgd.weight_decay) && sgd.weight_decay >= 0, "weight_decay must be >= 0");
  require(std::isfinite(sgd.l1) && sgd.l1 >= 0, "l1 must be >= 0");
  require(std::isfinite(server_lr) && server_lr > 0, "server_lr must be > 0");
  require(std::isfinite(dp_noise_multiplier) && dp_noise_multiplier >= 0,
          "dp_noise_multiplier (--dp-noise-multiplier) must be >= 0 (0 = no differential "
          "privacy)");
  if (!dp()) return;
  require(std::isfinite(dp_clip) && dp_clip > 0, "dp_clip (--dp-clip) must be > 0");
  require(dp_delta > 0 && dp_delta < 1,
          "dp_delta (--dp-delta) must be in (0, 1), and well below 1 / number of devices");
  if (!dp_adaptive_clip) return;
  require(dp_target_quantile > 0 && dp_target_quantile < 1,
          "dp_target_quantile (--dp-target-quantile) must be in (0, 1)");
  require(std::isfinite(dp_clip_lr) && dp_clip_lr > 0, "dp_clip_lr (--dp-clip-lr) must be > 0");
}

namespace {

// The double with the float's shortest decimal form (0.05f -> 0.05, not
// 0.0500000007), so plans read as they were written and compare stably.
double Decimal(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::stod(std::string(buf, r.ptr));
}

// An integer field: a JSON integer within T's range, nothing else. get<T>
// would truncate 2.5 to 2, wrap 4294967297 to 1 and -1 to 2^64-1, and
// convert 1e20 with undefined behaviour (found by fuzz/plan_json_fuzz.cpp).
template <typename T>
T Integer(const nlohmann::json& j, const char* key) {
  const nlohmann::json& v = j.at(key);
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (std::in_range<T>(u)) return static_cast<T>(u);
  } else if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (std::in_range<T>(i)) return static_cast<T>(i);
  }
  throw Error(std::string("invalid plan: ") + key + " must be an integer in " +
              std::to_string(std::numeric_limits<T>::min()) + ".." +
              std::to_string(std::numeric_limits<T>::max()) + ", not " +
              (v.is_number() ? v.dump() : std::string("a ") + v.type_name()));
}

}  // namespace

nlohmann::json Plan::ToJson() const {
  nlohmann::json j = {
      {"model", architecture().ToString()},
      {"algorithm", ToString(algorithm)},
      {"local_epochs", local_epochs},
      {"local_steps", local_steps},
      {"batch", batch},
      {"lr", Decimal(sgd.lr)},
      {"momentum", Decimal(sgd.momentum)},
      {"weight_decay", Decimal(sgd.weight_decay)},
      {"l1", Decimal(sgd.l1)},
      {"lr_schedule", sgd.schedule.ToString()},
      {"server_lr", server_lr},
      {"seed", seed},
  };
  if (dp()) {
    j["dp_noise_multiplier"] = dp_noise_multiplier;
    j["dp_delta"] = dp_delta;
    if (dp_adaptive_clip) {
      char initial[32];
      const auto r = std::to_chars(initial, initial + sizeof initial, dp_clip);
      j["dp_clip"] = "adaptive:" + std::string(initial, r.ptr);
      j["dp_target_quantile"] = dp_target_quantile;
      j["dp_clip_lr"] = dp_clip_lr;
    } else {
      j["dp_clip"] = dp_clip;
    }
  }
  return j;
}

Plan Plan::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("invalid plan: not a JSON object");
  Plan p;
  try {
    p.model = j.at("model").get<std::string>();
    p.algorithm = ParseAlgorithm(j.at("algorithm").get<std::string>());
    p.local_epochs = j.at("local_epochs").get<double>();
    p.local_steps = Integer<long>(j, "local_steps");
    p.batch = Integer<int>(j, "batch");
    p.sgd.lr = j.at("lr").get<float>();
    p.sgd.momentum = j.at("momentum").get<float>();
    p.sgd.weight_decay = j.at("weight_decay").get<float>();
    p.sgd.l1 = j.at("l1").get<float>();
    p.sgd.schedule = LrSchedule::Parse(j.at("lr_schedule").get<std::string>());
    p.server_lr = j.at("server_lr").get<double>();
    p.seed = Integer<std::uint64_t>(j, "seed");
    // Plans written before differential privacy existed have no dp_* keys.
    p.dp_noise_multiplier = j.value("dp_noise_multiplier", p.dp_noise_multiplier);
    p.dp_delta = j.value("dp_delta", p.dp_delta);
    if (const auto clip = j.find("dp_clip"); clip != j.end()) {
      const DpClip c = clip->is_string() ? ParseDpClip(clip->get<std::string>())
                                         : DpClip{clip->get<double>(), false};
      p.dp_clip = c.clip;
      p.dp_adaptive_clip = c.adaptive;
    }
    p.dp_target_quantile = j.value("dp_target_quantile", p.dp_target_quantile);
    p.dp_clip_lr = j.value("dp_clip_lr", p.dp_clip_lr);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid plan: ") + e.what());
  }
  p.Validate();
  return p;
}

}  // namespace fedsgd
