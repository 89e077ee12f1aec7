// Plan: validation and JSON form (see plan.h).
#include "fedsgd/plan.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "fedsgd/broadcast_codec.h"
#include "fedsgd/class_balance.h"
#include "fedsgd/error.h"
#include "fedsgd/staleness.h"
#include "fedsgd/update_codec.h"

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
  require(std::isfinite(prox_mu) && prox_mu >= 0, "prox_mu (--prox-mu) must be >= 0");
  require(std::isfinite(lr_round_decay) && lr_round_decay > 0 && lr_round_decay <= 1,
          "lr_round_decay (--lr-round-decay) must be in (0, 1]");
  require(std::isfinite(logit_adjustment) && logit_adjustment >= 0 && logit_adjustment <= 10,
          "logit_adjustment (--logit-adjustment) must be in [0, 10]");
  // At most half held out: a device must keep most of its shard to train on.
  require(std::isfinite(eval_fraction) && eval_fraction >= 0 && eval_fraction <= 0.5,
          "eval_fraction (--eval-fraction) must be in [0, 0.5]");
  wire::UpdateCodec::Parse(update_codec);      // throws, naming --update-codec
  wire::ParseBroadcastCodec(broadcast_codec);  // throws, naming --broadcast-codec
  require(mode == "sync" || mode == "async", "mode '" + mode + "' must be sync or async (--async)");
  require(async_buffer >= 0 && async_buffer <= 1000000,
          "async_buffer (--buffer) must be in 0..1000000 (0 = half the devices online)");
  require(max_staleness >= 0 && max_staleness <= 1000000,
          "max_staleness (--max-staleness) must be in 0..1000000");
  StalenessWeight::Parse(staleness_weight);  // throws, naming --staleness-weight
  // The accountant composes one sampled Gaussian mechanism per round of
  // devices; buffers of arbitrary devices' updates are not analysed.
  require(!(async() && dp()),
          "mode async (--async) cannot be combined with differential privacy "
          "(--dp-noise-multiplier)");
  ParseClassWeighting(class_weighting);  // throws, naming --class-weighting
  require(clients_per_round >= 0 && clients_per_round <= 10000000,
          "clients_per_round (--clients-per-round) must be in 0..10000000 (0 = every device)");
  require(std::isfinite(clients_fraction) && clients_fraction >= 0 && clients_fraction <= 1,
          "clients_fraction (--clients-per-round F) must be in (0, 1]");
  require(!(clients_per_round > 0 && clients_fraction > 0),
          "clients_per_round and clients_fraction exclude each other (--clients-per-round takes "
          "a count or a fraction)");
  require(std::isfinite(over_selection) && over_selection >= 1 && over_selection <= 10,
          "over_selection (--over-selection) must be in [1, 10]");
  require(freeze_layers >= 0 &&
              static_cast<std::size_t>(freeze_layers) < architecture().Layout().size(),
          "freeze_layers (--freeze-layers) must be in 0.." +
              std::to_string(architecture().Layout().size() - 1) + " for model " + model +
              " (its layers with parameters, less one that stays trainable)");
  require(personalize_steps >= 0 && personalize_steps <= 1000000,
          "personalize_steps (--personalize-steps) must be in 0..1000000 (0 = off)");
  require(
      personalize_layers == "all" || personalize_layers == "last",
      "personalize_layers (--personalize-layers) '" + personalize_layers + "' must be all or last");
  require(!(personalize() && eval_fraction <= 0),
          "personalize_steps (--personalize-steps) needs a held-out part to score the "
          "personalised model on: --eval-fraction > 0");
  require(!(personalize() && algorithm != Algorithm::kFedAvg),
          "personalize_steps (--personalize-steps) needs --algorithm fedavg (devices train "
          "locally)");
  require(initial_model.empty() == initial_model_sha256.empty(),
          "initial_model and initial_model_sha256 come together (--initial-model)");
  require(initial_model.size() <= 4096, "initial_model (--initial-model) is too long");
  require(initial_model_sha256.empty() ||
              (initial_model_sha256.size() == 64 &&
               initial_model_sha256.find_first_not_of("0123456789abcdef") == std::string::npos),
          "initial_model_sha256 must be 64 lowercase hex digits");
  // Asynchronous devices are not invited: every one trains continuously.
  require(!(async() && selection()),
          "mode async (--async) cannot be combined with device selection (--clients-per-round); "
          "--buffer bounds an asynchronous step instead");
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
      {"prox_mu", prox_mu},
      {"eval_fraction", eval_fraction},
  };
  if (logit_adjustment > 0) j["logit_adjustment"] = logit_adjustment;
  if (lr_round_decay != 1) j["lr_round_decay"] = lr_round_decay;
  if (update_codec != "fp32") j["update_codec"] = wire::UpdateCodec::Parse(update_codec).ToString();
  if (async()) {
    j["mode"] = mode;
    j["async_buffer"] = async_buffer;
    j["max_staleness"] = max_staleness;
    j["staleness_weight"] = StalenessWeight::Parse(staleness_weight).ToString();
  }
  if (class_weighting != "none") j["class_weighting"] = class_weighting;
  if (selection()) {
    if (clients_per_round > 0) j["clients_per_round"] = clients_per_round;
    if (clients_fraction > 0) j["clients_fraction"] = clients_fraction;
    j["over_selection"] = over_selection;
  }
  if (broadcast_codec != "fp32") j["broadcast_codec"] = broadcast_codec;
  if (freeze_layers > 0) j["freeze_layers"] = freeze_layers;
  if (personalize()) {
    j["personalize_steps"] = personalize_steps;
    j["personalize_layers"] = personalize_layers;
  }
  if (!initial_model.empty()) {
    j["initial_model"] = initial_model;
    j["initial_model_sha256"] = initial_model_sha256;
  }
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
    // Added with issue 9: a plan stored before has none of them and reads
    // as the defaults, so the same flags resume it (with today's defaults).
    const auto optional = [&j](const char* key, auto& field) {
      using Field = std::remove_reference_t<decltype(field)>;
      if (!j.contains(key)) return;
      if constexpr (std::is_integral_v<Field>) {
        field = Integer<Field>(j, key);
      } else {
        field = j.at(key).get<Field>();
      }
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
    optional("prox_mu", p.prox_mu);
    optional("eval_fraction", p.eval_fraction);
    optional("update_codec", p.update_codec);
    optional("broadcast_codec", p.broadcast_codec);
    optional("logit_adjustment", p.logit_adjustment);
    optional("lr_round_decay", p.lr_round_decay);
    optional("mode", p.mode);
    optional("async_buffer", p.async_buffer);
    optional("max_staleness", p.max_staleness);
    optional("staleness_weight", p.staleness_weight);
    optional("class_weighting", p.class_weighting);
    optional("clients_per_round", p.clients_per_round);
    optional("clients_fraction", p.clients_fraction);
    optional("over_selection", p.over_selection);
    optional("freeze_layers", p.freeze_layers);
    optional("personalize_steps", p.personalize_steps);
    optional("personalize_layers", p.personalize_layers);
    optional("initial_model", p.initial_model);
    optional("initial_model_sha256", p.initial_model_sha256);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("invalid plan: ") + e.what());
  }
  p.Validate();
  return p;
}

std::size_t Plan::SelectionTarget(std::size_t online) const {
  if (clients_per_round > 0) return static_cast<std::size_t>(clients_per_round);
  const auto n =
      static_cast<std::size_t>(std::ceil(clients_fraction * static_cast<double>(online)));
  return std::max<std::size_t>(n, 1);
}

float Plan::RoundLr(std::uint64_t round) const {
  if (lr_round_decay == 1 || round <= 1) return sgd.lr;
  return static_cast<float>(sgd.lr * std::pow(lr_round_decay, static_cast<double>(round - 1)));
}

std::size_t Plan::FrozenParameters() const {
  if (freeze_layers <= 0) return 0;
  return architecture().Layout().at(static_cast<std::size_t>(freeze_layers)).weight_offset;
}

std::size_t Plan::PersonalFrozenParameters() const {
  if (personalize_layers != "last") return FrozenParameters();
  return architecture().Layout().back().weight_offset;
}

std::size_t Plan::TrainableParameters() const {
  return architecture().ParameterCount() - FrozenParameters();
}

}  // namespace fedsgd
