// RoundManager (see round_manager.h and docs/protocol.md).
#include "round_manager.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// SplitMix64's finaliser: spreads (seed, run, round) over the generator's seed.
std::uint64_t Mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string Hex(std::uint64_t x) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(x));
  return text;
}

}  // namespace

const char* ToString(RunPhase phase) {
  switch (phase) {
    case RunPhase::kWaiting:
      return "waiting";
    case RunPhase::kTraining:
      return "training";
    case RunPhase::kAggregating:
      return "aggregating";
    case RunPhase::kDone:
      return "done";
  }
  return "?";
}

RoundManager::RoundManager(Plan plan, RoundSettings settings, std::int64_t run_id,
                           std::uint64_t version, std::vector<float> params,
                           std::unique_ptr<Aggregator> aggregator, ServerState state)
    : plan_(std::move(plan)),
      settings_(settings),
      run_id_(run_id),
      version_(version),
      params_(std::move(params)),
      aggregator_(std::move(aggregator)),
      optimizer_(plan_),
      state_(std::move(state)),
      devices_(settings.heartbeat_timeout, settings.max_devices, settings.forget_offline_after),
      staleness_weight_(StalenessWeight::Parse(plan_.staleness_weight)),
      frozen_(plan_.FrozenParameters()) {
  if (frozen_ >= params_.size()) throw Error("freeze_layers leaves no parameter to train");
  // A stored state that does not fit is refused at startup, not mid-run.
  optimizer_.CheckState(state_, trainable());
  if (plan_.dp()) {
    auto dp = std::make_unique<DpAggregator>(std::move(aggregator_), DpSettings::FromPlan(plan_));
    dp_ = dp.get();
    aggregator_ = std::move(dp);
  }
  aggregator_->LoadState(state_);
}

nlohmann::json RoundManager::privacy() const {
  if (!dp_) return nullptr;
  return {{"epsilon", accountant_.Epsilon(plan_.dp_delta)}, {"delta", plan_.dp_delta},
          {"noise_multiplier", plan_.dp_noise_multiplier},  {"clip", dp_->clip()},
          {"adaptive_clip", plan_.dp_adaptive_clip},        {"rounds", accountant_.rounds()}};
}

void RoundManager::RestorePrivacy(const nlohmann::json& record_privacy) {
  if (!dp_) return;
  try {
    const nlohmann::json& state = record_privacy.at("state");
    const auto clip = state.at("clip").get<std::vector<double>>();
    const auto accountant = state.at("accountant").get<std::vector<double>>();
    PrivacyAccountant restored;
    restored.ImportState(accountant);
    dp_->ImportState(clip);
    accountant_ = restored;
  } catch (const nlohmann::json::exception& e) {
    throw Error("the privacy record of round " + std::to_string(version_) +
                " cannot be resumed from (" + e.what() + "): the database is damaged");
  }
}

RunPhase RoundManager::phase() const {
  if (done()) return RunPhase::kDone;
  if (closing_) return RunPhase::kAggregating;
  return open_ ? RunPhase::kTraining : RunPhase::kWaiting;
}

std::optional<wire::Reject> RoundManager::OnUpdate(const wire::Update& u, std::size_t bytes,
                                                   double now) {
  return OnUpdate(u, u.payload, bytes, now);
}

std::optional<wire::Reject> RoundManager::OnUpdate(const wire::Update& u,
                                                   std::span<const float> values, std::size_t bytes,
                                                   double now) {
  using wire::RejectReason;
  auto refuse = [&](RejectReason reason, std::string detail) {
    devices_.CountReject(u.device, reason);
    if (open_) ++rejected_in_round_;
    return wire::Reject{reason, std::move(detail)};
  };
  DeviceInfo* device = devices_.Touch(u.device, now);
  if (!device)
    return refuse(RejectReason::kUnknownDevice, "device '" + u.device + "' has not joined");
  if (!open_ || closing_) {
    return refuse(u.round <= version_ ? RejectReason::kStaleRound : RejectReason::kRoundClosed,
                  "no round is open (model version " + std::to_string(version_) + ")");
  }
  std::uint64_t staleness = 0;
  if (plan_.async()) {
    if (u.model_version > version_ || u.round != u.model_version + 1) {
      return refuse(RejectReason::kBadField,
                    "an asynchronous update is for round (model version + 1) of a version at "
                    "most the newest, " +
                        std::to_string(version_));
    }
    staleness = version_ - u.model_version;
    if (staleness > static_cast<std::uint64_t>(plan_.max_staleness)) {
      return refuse(RejectReason::kStaleRound,
                    "trained from model version " + std::to_string(u.model_version) + ", " +
                        std::to_string(staleness) + " versions old; at most " +
                        std::to_string(plan_.max_staleness) + " (--max-staleness)");
    }
  } else {
    if (u.round != open_round()) {
      return refuse(u.round < open_round() ? RejectReason::kStaleRound : RejectReason::kRoundClosed,
                    "round " + std::to_string(u.round) + " is not the open round " +
                        std::to_string(open_round()));
    }
    if (u.model_version != version_) {
      return refuse(RejectReason::kStaleRound, "trained from model version " +
                                                   std::to_string(u.model_version) + ", not " +
                                                   std::to_string(version_));
    }
  }
  const UpdateKey key{u.device, u.model_version};
  if (accepted_.count(key) || applied_.count(key)) {
    return refuse(RejectReason::kDuplicate, "already sent an update trained from model version " +
                                                std::to_string(u.model_version));
  }
  if (plan_.selection() && !participants_.count(u.device)) {
    return refuse(RejectReason::kNotSelected,
                  "not selected for round " + std::to_string(open_round()) + " (" +
                      std::to_string(participants_.size()) + " of " +
                      std::to_string(online_at_open_) + " online devices were)");
  }
  if (u.samples > device->samples) {  // the sample count weights the update: never trust it more
    return refuse(RejectReason::kSamplesExceeded, std::to_string(u.samples) + " samples claimed, " +
                                                      std::to_string(device->samples) +
                                                      " declared at join");
  }
  if (values.size() != trainable()) {  // Decode checks this too; never trust one layer
    return refuse(RejectReason::kWrongSize,
                  "payload size differs from the model's trainable parameters");
  }
  if (aggregator_->full()) {
    return refuse(RejectReason::kRoundClosed,
                  "round " + std::to_string(u.round) +
                      " has as many updates as --aggregation-memory-mb holds; it is closing");
  }
  const std::string expected_kind = plan_.algorithm == Algorithm::kFedAvg ? "delta" : "gradient";
  if (u.kind != expected_kind) {
    return refuse(RejectReason::kBadField, "this run's plan expects " + expected_kind + " updates");
  }
  // FedBuff (Nguyen et al. 2022, Algorithm 1) scales a stale update by
  // w(s) and divides the buffer's sum by its size, not by the sum of the
  // w(s): staleness shrinks the step instead of cancelling out of a
  // weighted mean. Here the mean stays sample-weighted. Synchronous
  // updates are never stale (w(0) = 1).
  const double factor = staleness_weight_(staleness);
  if (factor != 1) {
    scaled_.assign(values.begin(), values.end());
    for (float& v : scaled_) v = static_cast<float>(v * factor);
    aggregator_->Add(scaled_, static_cast<double>(u.samples));
  } else {
    aggregator_->Add(values, static_cast<double>(u.samples));
  }
  accepted_.insert(key);
  contributions_.push_back({u.device, u.samples, u.loss, u.train_seconds, u.evaluation,
                            plan_.async() ? std::optional(u.model_version) : std::nullopt,
                            u.personal});
  device->last_staleness = staleness;
  bytes_in_round_ += bytes;
  device->updates_accepted += 1;
  device->bytes_in += bytes;
  device->last_loss = u.loss;
  device->state = "idle";
  return std::nullopt;
}

bool RoundManager::ShouldOpen() const {
  return !done() && !open_ && devices_.online() >= settings_.min_devices;
}

std::uint64_t RoundManager::OpenRound(double now, double unix_now) {
  open_ = true;
  closing_ = false;
  deadline_ = now + settings_.round_timeout;
  started_at_ = unix_now;
  participants_.clear();
  std::vector<std::string> online;
  for (const auto& [id, d] : devices_.devices()) {
    if (d.online) online.push_back(id);
  }
  online_at_open_ = online.size();
  if (plan_.selection()) {
    // A partial Fisher-Yates shuffle over the ids in their (sorted) order:
    // uniform, and the same for the same seed and fleet.
    selection_target_ = plan_.SelectionTarget(online.size());
    const auto invited = std::min(
        online.size(), static_cast<std::size_t>(std::ceil(plan_.over_selection *
                                                          static_cast<double>(selection_target_))));
    selection_seed_ =
        Mix(Mix(plan_.seed ^ Mix(static_cast<std::uint64_t>(run_id_))) ^ (version_ + 1));
    std::mt19937_64 rng(selection_seed_);
    for (std::size_t i = 0; i < invited; ++i) {
      std::uniform_int_distribution<std::size_t> pick(i, online.size() - 1);
      std::swap(online[i], online[pick(rng)]);
    }
    online.resize(invited);
  }
  participants_.insert(online.begin(), online.end());
  accepted_.clear();
  contributions_.clear();
  if (plan_.async()) {
    buffer_target_ = plan_.async_buffer > 0 ? static_cast<std::size_t>(plan_.async_buffer)
                                            : (participants_.size() + 1) / 2;
  }
  rejected_in_round_ = 0;
  bytes_in_round_ = 0;
  aggregator_->LoadState(state_);  // the committed state, also after a Discard
  aggregator_->Begin(trainable());
  if (dp_) {
    dp_->SetDenominator(participants_.size());
    dp_state_at_open_ = dp_->ExportState();
  }
  return open_round();
}

std::size_t RoundManager::quorum_target() const {
  if (plan_.async()) return std::max(buffer_target_, settings_.min_updates);
  std::size_t online = 0;
  for (const std::string& id : participants_) {
    const DeviceInfo* d = devices_.Find(id);
    online += d && d->online;
  }
  auto target = static_cast<std::size_t>(std::ceil(settings_.quorum * static_cast<double>(online)));
  if (plan_.selection()) target = std::min(target, selection_target_);
  return std::max(target, settings_.min_updates);
}

nlohmann::json RoundManager::selection() const {
  if (!plan_.selection() || !open_) return nullptr;
  return {{"online", online_at_open_},
          {"invited", participants_.size()},
          {"target", selection_target_},
          {"seed", Hex(selection_seed_)}};
}

bool RoundManager::ShouldClose(double now) const {
  if (!open_ || closing_) return false;
  const std::size_t got = contributions_.size();
  if (got >= quorum_target()) return true;
  if (got >= 1 && aggregator_->full()) return true;  // closes with what the buffer holds
  return now >= deadline_ && got >= settings_.min_updates;
}

bool RoundManager::NeedsRebroadcast(double now) {
  if (!open_ || closing_ || now < deadline_ || contributions_.size() >= settings_.min_updates)
    return false;
  deadline_ = now + settings_.round_timeout;
  return true;
}

ClosedRound RoundManager::CloseRound(double unix_now) {
  closing_ = true;
  const auto t0 = std::chrono::steady_clock::now();
  ClosedRound out;
  std::vector<float> aggregate(trainable());
  aggregator_->Finish(aggregate);
  out.params = params_;
  out.state = state_;
  aggregator_->SaveState(out.state);
  // fedsgd aggregates gradients: the server step is along -lr x gradient.
  // Frozen parameters (freeze_layers) are neither aggregated nor stepped.
  const bool gradient = plan_.algorithm == Algorithm::kFedSgd;
  optimizer_.Step(std::span<float>(out.params).subspan(frozen_), aggregate,
                  gradient ? -static_cast<double>(plan_.sgd.lr) : 1.0, out.state);
  RoundRecord& r = out.record;
  nlohmann::json aggregation = aggregator_->stats().ToJson();
  aggregation["server_optimizer"] = optimizer_.name();
  if (plan_.async()) {
    // The buffer's staleness: how old the models its updates came from were.
    std::uint64_t sum = 0, most = 0;
    for (const DeviceContribution& c : contributions_) {
      const std::uint64_t s = version_ - *c.model_version;
      sum += s;
      most = std::max(most, s);
    }
    aggregation["buffer"] = contributions_.size();
    aggregation["staleness_mean"] =
        contributions_.empty()
            ? 0.0
            : static_cast<double>(sum) / static_cast<double>(contributions_.size());
    aggregation["staleness_max"] = most;
  }
  if (plan_.selection()) aggregation["selection"] = selection();
  r.aggregation = std::move(aggregation);
  r.aggregate_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.run_id = run_id_;
  r.round = open_round();
  r.devices = contributions_;
  double loss = 0, weight = 0;
  for (const DeviceContribution& c : contributions_) {
    loss += c.loss * static_cast<double>(c.samples);
    weight += static_cast<double>(c.samples);
  }
  r.train_loss = weight > 0 ? loss / weight : 0;
  r.started_at = started_at_;
  r.finished_at = unix_now;
  r.rejected_updates = rejected_in_round_;
  r.bytes_in = bytes_in_round_;
  if (dp_) {
    // q = the share of known devices this round was opened for. It is a
    // sampling rate only if they were picked at random (docs/aggregation.md).
    const double known = static_cast<double>(std::max<std::size_t>(devices_.size(), 1));
    const double q =
        std::min(1.0, static_cast<double>(std::max<std::size_t>(participants_.size(), 1)) / known);
    PrivacyAccountant next = accountant_;
    next.Compose(plan_.dp_noise_multiplier, q);
    r.privacy = {{"epsilon", next.Epsilon(plan_.dp_delta)},
                 {"delta", plan_.dp_delta},
                 {"noise_multiplier", plan_.dp_noise_multiplier},
                 {"clip", dp_->last_clip()},
                 {"rounds", next.rounds()},
                 {"sampling_rate", q},
                 {"state", {{"clip", dp_->ExportState()}, {"accountant", next.ExportState()}}}};
    if (plan_.dp_adaptive_clip) r.privacy["unclipped_fraction"] = dp_->last_unclipped_fraction();
    out.accountant = std::move(next);
  }
  out.aggregate = std::move(aggregate);
  return out;
}

void RoundManager::Commit(ClosedRound&& round) {
  params_ = std::move(round.params);
  if (round.accountant) accountant_ = std::move(*round.accountant);
  state_ = std::move(round.state);
  version_ = round.record.round;
  for (const DeviceContribution& c : round.record.devices) {
    if (DeviceInfo* d = devices_.Find(c.device)) d->rounds_joined += 1;
  }
  if (plan_.async()) {
    for (const UpdateKey& k : accepted_) applied_.insert(k);
    ForgetOldApplied();
  }
  open_ = false;
  closing_ = false;
}

void RoundManager::Discard() {
  // The model was not released: neither the clip's step nor the round's
  // privacy cost counts.
  if (dp_) dp_->ImportState(dp_state_at_open_);
  open_ = false;
  closing_ = false;
}

void RoundManager::Adopt(std::uint64_t version, std::vector<float> params) {
  if (params.size() != params_.size()) {
    throw Error("the root's model has " + std::to_string(params.size()) +
                " parameters, this plan's " + std::to_string(params_.size()));
  }
  Discard();
  params_ = std::move(params);
  version_ = version;
}

void RoundManager::RestoreApplied(const std::vector<RoundRecord>& recent) {
  if (!plan_.async()) return;
  for (const RoundRecord& r : recent) {
    for (const DeviceContribution& c : r.devices) {
      if (c.model_version) applied_.insert({c.device, *c.model_version});
    }
  }
  ForgetOldApplied();
}

void RoundManager::ForgetOldApplied() {
  // An update older than max_staleness is refused as stale anyway.
  const auto bound = static_cast<std::uint64_t>(plan_.max_staleness);
  std::erase_if(applied_, [&](const UpdateKey& k) { return k.second + bound < version_; });
}

}  // namespace fedsgd
