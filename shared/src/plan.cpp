// Plan: validation and JSON form (see plan.h).
#include "fedsgd/plan.h"

#include <charconv>
#include <cmath>
#include <string>

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
  require(std::isfinite(prox_mu) && prox_mu >= 0, "prox_mu must be >= 0");
  // At most half held out: a device must keep most of its shard to train on.
  require(std::isfinite(eval_fraction) && eval_fraction >= 0 && eval_fraction <= 0.5,
          "eval_fraction must be in [0, 0.5]");
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
      {"prox_mu", prox_mu},
      {"eval_fraction", eval_fraction},
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
    // Absent in plans stored before issue 9: the defaults, which then
    // compare equal on resume.
    p.prox_mu = j.value("prox_mu", p.prox_mu);
    p.eval_fraction = j.value("eval_fraction", p.eval_fraction);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid plan: ") + e.what());
  }
  p.Validate();
  return p;
}

}  // namespace fedsgd
