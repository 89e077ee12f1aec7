// Plan: validation and JSON form (see plan.h).
#include "fedsgd/plan.h"

#include <charconv>
#include <cmath>
#include <string>
#include <system_error>
#include <type_traits>

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

NormBound NormBound::Parse(const std::string& text) {
  NormBound b;
  if (text == "off") return b;
  const auto colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  const auto bad = [&] {
    return Error("invalid plan: norm_bound (--norm-bound) '" + text +
                 "' must be off, fixed:B or adaptive:K with a number B or K > 0");
  };
  if (colon == std::string::npos || (kind != "fixed" && kind != "adaptive")) throw bad();
  const std::string number = text.substr(colon + 1);
  const char* end = number.data() + number.size();
  const auto r = std::from_chars(number.data(), end, b.value);
  if (number.empty() || r.ec != std::errc() || r.ptr != end || !std::isfinite(b.value) ||
      b.value <= 0)
    throw bad();
  b.kind = kind == "fixed" ? Kind::kFixed : Kind::kAdaptive;
  return b;
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
  require(aggregator == "mean" || aggregator == "median" || aggregator == "trimmed_mean" ||
              aggregator == "krum" || aggregator == "multi_krum",
          "aggregator (--aggregator) '" + aggregator +
              "' must be mean, median, trimmed_mean, krum or multi_krum");
  require(std::isfinite(trim_fraction) && trim_fraction >= 0 && trim_fraction < 0.5,
          "trim_fraction (--trim-fraction) must be in [0, 0.5)");
  require(byzantine >= 0, "byzantine (--byzantine) must be >= 0");
  require(krum_select >= 0, "krum_select (--krum-select) must be >= 0");
  NormBound::Parse(norm_bound);
  require(std::isfinite(max_device_weight) && max_device_weight >= 0,
          "max_device_weight (--max-device-weight) must be >= 0");
  require(server_optimizer == "sgd" || server_optimizer == "momentum" ||
              server_optimizer == "adam" || server_optimizer == "yogi" ||
              server_optimizer == "adagrad",
          "server_optimizer (--server-optimizer) '" + server_optimizer +
              "' must be sgd, momentum, adam, yogi or adagrad");
  require(std::isfinite(server_momentum) && server_momentum >= 0 && server_momentum < 1,
          "server_momentum (--server-momentum) must be in [0, 1)");
  require(std::isfinite(server_beta1) && server_beta1 >= 0 && server_beta1 < 1,
          "server_beta1 (--server-beta1) must be in [0, 1)");
  require(std::isfinite(server_beta2) && server_beta2 >= 0 && server_beta2 < 1,
          "server_beta2 (--server-beta2) must be in [0, 1)");
  require(std::isfinite(server_tau) && server_tau > 0, "server_tau (--server-tau) must be > 0");
  require(std::isfinite(aggregation_memory_mb) && aggregation_memory_mb > 0,
          "aggregation_memory_mb (--aggregation-memory-mb) must be > 0");
}

namespace {

// The double with the float's shortest decimal form (0.05f -> 0.05, not
// 0.0500000007), so plans read as they were written and compare stably.
double Decimal(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::stod(std::string(buf, r.ptr));
}

}  // namespace

nlohmann::json Plan::ToJson() const {
  return {
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
      {"aggregator", aggregator},
      {"trim_fraction", trim_fraction},
      {"byzantine", byzantine},
      {"krum_select", krum_select},
      {"norm_bound", norm_bound},
      {"max_device_weight", max_device_weight},
      {"server_optimizer", server_optimizer},
      {"server_momentum", server_momentum},
      {"server_beta1", server_beta1},
      {"server_beta2", server_beta2},
      {"server_tau", server_tau},
      {"aggregation_memory_mb", aggregation_memory_mb},
  };
}

Plan Plan::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) throw Error("invalid plan: not a JSON object");
  Plan p;
  try {
    p.model = j.at("model").get<std::string>();
    p.algorithm = ParseAlgorithm(j.at("algorithm").get<std::string>());
    p.local_epochs = j.at("local_epochs").get<double>();
    p.local_steps = j.at("local_steps").get<long>();
    p.batch = j.at("batch").get<int>();
    p.sgd.lr = j.at("lr").get<float>();
    p.sgd.momentum = j.at("momentum").get<float>();
    p.sgd.weight_decay = j.at("weight_decay").get<float>();
    p.sgd.l1 = j.at("l1").get<float>();
    p.sgd.schedule = LrSchedule::Parse(j.at("lr_schedule").get<std::string>());
    p.server_lr = j.at("server_lr").get<double>();
    p.seed = j.at("seed").get<std::uint64_t>();
    // Added with issue 9: a plan stored before has none of them and reads
    // as the defaults, so the same flags resume it (with today's defaults).
    const auto optional = [&j](const char* key, auto& field) {
      if (j.contains(key)) field = j.at(key).get<std::remove_reference_t<decltype(field)>>();
    };
    optional("aggregator", p.aggregator);
    optional("trim_fraction", p.trim_fraction);
    optional("byzantine", p.byzantine);
    optional("krum_select", p.krum_select);
    optional("norm_bound", p.norm_bound);
    optional("max_device_weight", p.max_device_weight);
    optional("server_optimizer", p.server_optimizer);
    optional("server_momentum", p.server_momentum);
    optional("server_beta1", p.server_beta1);
    optional("server_beta2", p.server_beta2);
    optional("server_tau", p.server_tau);
    optional("aggregation_memory_mb", p.aggregation_memory_mb);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid plan: ") + e.what());
  }
  p.Validate();
  return p;
}

}  // namespace fedsgd
