// A coordinator as a gateway (see coordinator_server.h and docs/protocol.md
// "Gateways"): the root's plan, model and rounds; its boards' rounds
// forwarded as one update each. The loop is in coordinator_server.cpp.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>

#include "coordinator_server.h"
#include "fedsgd/error.h"
#include "fedsgd/network.h"
#include "gateway_scores.h"
#include "model_guard.h"
#include "two_tier_plan.h"
#include "wall_clock.h"

namespace fedsgd {
namespace {

// A plan as StartRun compares it: in today's form.
nlohmann::json Normalised(const nlohmann::json& plan) {
  try {
    return Plan::FromJson(plan).ToJson();
  } catch (const Error&) {
    return plan;
  }
}

}  // namespace

bool CoordinatorServer::ShouldOpenRound() const {
  if (!gateway()) return manager_->ShouldOpen();
  return !root_final_ && root_round_ == manager_->version() + 1 && manager_->open_round() == 0 &&
         !forwarded_ && given_up_round_ != root_round_ &&
         manager_->devices().online() >= manager_->settings().min_devices;
}

wire::Welcome CoordinatorServer::JoinRoot(const std::atomic<bool>* stop) {
  UpstreamConfig config{options_.upstream, options_.GatewayId(), std::nullopt, {}, 3.0};
  if (!options_.upstream_key.empty()) {
    config.keys = curve::LoadSecretKey(options_.upstream_key);
    config.server_key = curve::LoadPublicKey(options_.upstream_server_key);
  }
  upstream_ = std::make_unique<UpstreamLink>(context_, std::move(config), log_);
  log_ << "fedsgd-coordinator: gateway " << options_.GatewayId() << ": joining the root at "
       << options_.upstream << std::endl;
  double next_note = Now() + 10;
  while (true) {
    if (stop && stop->load())
      throw Error("stopped while waiting for the root at " + options_.upstream);
    upstream_events_.clear();
    upstream_->Poll(Now(), GatewayReport{}, upstream_events_);
    for (wire::Message& m : upstream_events_) {
      if (auto* w = std::get_if<wire::Welcome>(&m)) {
        log_ << "fedsgd-coordinator: gateway " << options_.GatewayId() << ": joined the root (run "
             << w->run_id << ", model version " << w->model_version << ", round " << w->round
             << " open)" << std::endl;
        return std::move(*w);
      }
      if (const auto* r = std::get_if<wire::Reject>(&m)) {
        log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway "
             << options_.GatewayId() << ": the root refused the join: " << wire::ToString(r->reason)
             << ": " << r->detail << "; trying again" << std::endl;
      }
    }
    if (Now() >= next_note) {
      log_ << "fedsgd-coordinator: gateway " << options_.GatewayId()
           << ": no welcome from the root at " << options_.upstream << " after "
           << static_cast<int>(Now()) << " s; still trying" << std::endl;
      next_note += 10;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Plan CoordinatorServer::GatewayPlan(const wire::Welcome& root) {
  Plan plan;
  try {
    plan = Plan::FromJson(root.plan);
  } catch (const Error& e) {
    throw Error(std::string("the root's plan is not one this version reads: ") + e.what());
  }
  if (const auto problem = TwoTierProblem(plan)) {
    throw Error("a gateway cannot serve the root's plan: " + *problem);
  }
  const std::size_t n = plan.architecture().ParameterCount();
  if (root.params.size() != n) {
    throw Error("the root's welcome carries " + std::to_string(root.params.size()) +
                " parameters, its plan's model " + std::to_string(n));
  }
  return plan;
}

RunState CoordinatorServer::StartGatewayRun(const wire::Welcome& root) {
  const nlohmann::json plan = plan_.ToJson();
  bool fresh = options_.new_run;
  const std::int64_t newest = store_->LatestRunId();
  if (!fresh && newest > 0) {
    const std::optional<nlohmann::json> stored = store_->RunPlan(newest);
    const std::uint64_t round = store_->LatestRound(newest);
    if (!stored || Normalised(*stored) != plan) {
      log_ << "fedsgd-coordinator: gateway: the root runs another plan than run " << newest
           << " of " << options_.db << "; starting a new run" << std::endl;
      fresh = true;
    } else if (round > root.model_version) {
      log_ << "fedsgd-coordinator: gateway: run " << newest << " of " << options_.db
           << " is at round " << round << ", ahead of the root's model version "
           << root.model_version << "; starting a new run" << std::endl;
      fresh = true;
    }
  }
  RunState run = store_->StartRun(plan, root.params, fresh);
  if (root.model_version > run.round) {
    store_->AdoptCheckpoint(run.run_id, root.model_version, root.params);
  }
  run.round = root.model_version;
  run.params = root.params;
  run.state = {};  // the root steps the model; a gateway keeps no optimiser state
  return run;
}

GatewayReport CoordinatorServer::Report() {
  const double now = Now();
  // The sums cost a pass over the boards: twice a second is enough.
  if (now - report_at_ >= 0.5) {
    report_at_ = now;
    report_.samples = 0;
    report_.samples_per_second = 0;
    for (const auto& [id, d] : manager_->devices().devices()) {
      report_.samples += d.samples;
      if (d.online) report_.samples_per_second += d.samples_per_second;
    }
    report_.boards = manager_->devices().online();
    report_.loss = last_round_ ? last_round_->train_loss : 0;
  }
  const std::uint64_t open = manager_->open_round();
  report_.state = open || forwarded_ ? "training" : "idle";
  report_.round = open ? open : manager_->version();
  report_.progress =
      open ? std::min(1.0,
                      static_cast<double>(manager_->accepted()) /
                          static_cast<double>(std::max<std::size_t>(manager_->quorum_target(), 1)))
           : 0.0;
  if (!std::isfinite(report_.samples_per_second)) report_.samples_per_second = 0;
  if (!std::isfinite(report_.loss) || report_.loss < 0) report_.loss = 0;
  return report_;
}

void CoordinatorServer::GatewayTick() {
  const double now = Now();
  upstream_events_.clear();
  upstream_->Poll(now, Report(), upstream_events_);
  for (wire::Message& m : upstream_events_) {
    if (auto* w = std::get_if<wire::Welcome>(&m)) {
      if (Normalised(w->plan) != plan_.ToJson()) {
        throw Error("the root at " + options_.upstream +
                    " now runs another plan; restart the gateway to serve it");
      }
      log_ << "fedsgd-coordinator: gateway " << options_.GatewayId() << ": joined the root (run "
           << w->run_id << ", model version " << w->model_version << ", round " << w->round
           << " open)" << std::endl;
      // A (re)started root remembers nothing of its open round: the
      // forwarded update goes again (a duplicate is refused, not counted twice).
      // It is sent once the root has the round open again.
      if (forwarded_ && w->model_version == forwarded_update_.model_version) {
        forwarded_sent_ = false;
      }
      OnRootModel(w->model_version, w->round, false, w->params);
    } else if (auto* model = std::get_if<wire::Model>(&m)) {
      OnRootModel(model->model_version, model->round, model->final, model->params);
    } else if (const auto* ack = std::get_if<wire::Ack>(&m)) {
      if (ack->model_version > manager_->version()) {
        upstream_->Fetch(now);  // a broadcast was missed
      } else if (ack->model_version == manager_->version() && ack->round > root_round_) {
        root_round_ = ack->round;  // only the round's announcement was missed
      }
    } else if (const auto* reject = std::get_if<wire::Reject>(&m)) {
      OnRootReject(*reject);
    }
  }
  if (forwarded_ && !forwarded_sent_ && upstream_->joined() &&
      root_round_ == forwarded_update_.round) {
    SendForwarded();
  }
}

void CoordinatorServer::OnRootModel(std::uint64_t version, std::uint64_t round, bool final,
                                    std::vector<float>& params) {
  if (params.empty()) {
    if (version > manager_->version()) upstream_->Fetch(Now());
    return;
  }
  if (forwarded_ && version == forwarded_->record.round) {
    CommitForwarded(params);
  } else if (version > manager_->version()) {
    AdoptRootModel(version, params);
  } else if (version < manager_->version()) {
    throw Error("the root at " + options_.upstream + " is at model version " +
                std::to_string(version) + ", behind this gateway's " +
                std::to_string(manager_->version()) +
                " (was it restored from an older database?); restart the gateway with --new-run");
  }
  if (round != root_round_ && round != 0) {
    log_ << "fedsgd-coordinator: gateway: the root opened round " << round << std::endl;
  }
  root_round_ = round;
  if (final && !root_final_) {
    root_final_ = true;
    log_ << "fedsgd-coordinator: gateway: the root's run is complete at model version " << version
         << std::endl;
  }
}

void CoordinatorServer::OnRootReject(const wire::Reject& reject) {
  ++root_rejects_;
  log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << options_.GatewayId()
       << ": the root refused a message: " << wire::ToString(reject.reason) << ": " << reject.detail
       << std::endl;
  using wire::RejectReason;
  if (!forwarded_ || reject.reason == RejectReason::kDuplicate) return;  // the root has it
  if (reject.reason == RejectReason::kUnknownDevice ||
      reject.reason == RejectReason::kRateLimited) {
    forwarded_sent_ = false;  // a restarted root: it goes again after the join
    return;
  }
  // stale_round, round_closed, samples_exceeded...: the root will not take
  // it; its next model moves this gateway on.
  given_up_round_ = forwarded_->record.round;
  forwarded_.reset();
  forwarded_update_.payload = {};
  manager_->Discard();
  PublishStatus();
}

void CoordinatorServer::AdoptRootModel(std::uint64_t version, std::vector<float>& params) {
  if (manager_->open_round() != 0) {
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway: the root moved to "
         << "model version " << version << " without this gateway's round "
         << manager_->open_round() << "; its board updates are dropped" << std::endl;
  }
  if (const auto bad = FindNonFinite(params)) {
    log_ << LogPriority(LogLevel::kError)
         << "fedsgd-coordinator: gateway: dropped the root's model " << version << ": " << *bad
         << std::endl;
    return;
  }
  forwarded_.reset();
  try {
    store_->AdoptCheckpoint(manager_->run_id(), version, params);
  } catch (const Error& e) {
    log_ << LogPriority(LogLevel::kError) << "fedsgd-coordinator: gateway: " << e.what()
         << std::endl;
    return;
  }
  manager_->Adopt(version, std::move(params));
  PublishStatus();
}

void CoordinatorServer::CommitForwarded(std::vector<float>& params) {
  ClosedRound closed = std::move(*forwarded_);
  forwarded_.reset();
  forwarded_update_.payload = {};
  RoundRecord& r = closed.record;
  if (const auto bad = FindNonFinite(params)) {
    log_ << LogPriority(LogLevel::kError)
         << "fedsgd-coordinator: gateway: dropped the root's model " << r.round << ": " << *bad
         << std::endl;
    manager_->Discard();
    return;
  }
  closed.params = std::move(params);
  closed.state = {};
  r.aggregation["gateway"] = {{"forwarded_samples", forwarded_update_.samples},
                              {"root_round", r.round}};
  const auto eval_start = std::chrono::steady_clock::now();
  if (eval_) {
    const Evaluation ev = Evaluate(plan_.architecture(), closed.params.data(), *eval_, 2);
    r.test_accuracy = ev.accuracy;
    r.test_loss = ev.loss;
  }
  last_eval_seconds_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - eval_start).count();
  try {
    store_->CommitRound(r, closed.params, closed.state);
  } catch (const Error& e) {
    log_ << LogPriority(LogLevel::kError) << "fedsgd-coordinator: gateway: round " << r.round
         << " could not be committed here: " << e.what() << std::endl;
    manager_->Adopt(r.round, std::move(closed.params));
    return;
  }
  last_round_ = r;
  ++rounds_committed_;
  updates_clipped_ += r.aggregation.value("clipped", std::size_t{0});
  manager_->Commit(std::move(closed));
  const RoundRecord& done = *last_round_;
  char line[400];
  std::snprintf(
      line, sizeof line,
      "round %llu: the root committed it with this gateway's %zu board update(s) "
      "(%llu samples, train loss %.4f); test accuracy %s",
      static_cast<unsigned long long>(done.round), done.devices.size(),
      static_cast<unsigned long long>(forwarded_update_.samples), done.train_loss,
      done.test_accuracy ? std::to_string(*done.test_accuracy).substr(0, 6).c_str() : "n/a");
  log_ << line << std::endl;
  notifier_.Status(line);
  PublishStatus();
}

void CoordinatorServer::ForwardRound() {
  ClosedRound closed = manager_->CloseRound(UnixNow());
  const RoundRecord& r = closed.record;
  if (const auto bad = FindNonFinite(closed.aggregate)) {
    ++rounds_refused_;
    log_ << LogPriority(LogLevel::kError) << "fedsgd-coordinator: gateway: round " << r.round
         << " refused, its updates discarded and the round opened again: the aggregate is not "
            "finite ("
         << *bad << ")" << std::endl;
    manager_->Discard();
    PublishStatus();
    return;
  }
  wire::Update u;
  u.device = upstream_->config().id;
  u.round = r.round;
  u.model_version = manager_->version();
  u.kind = plan_.algorithm == Algorithm::kFedSgd ? "gradient" : "delta";
  u.loss = r.train_loss;
  u.train_seconds = std::max(0.0, r.finished_at - r.started_at);
  for (const DeviceContribution& c : r.devices) u.samples += c.samples;
  GatewayScores scores = CombineBoardScores(r.devices);
  u.evaluation = scores.evaluation;
  u.personal = scores.personal;
  u.payload = std::move(closed.aggregate);
  forwarded_update_ = std::move(u);
  forwarded_ = std::move(closed);
  forwarded_sent_ = false;
  log_ << "fedsgd-coordinator: gateway: round " << r.round << " closed with "
       << forwarded_->record.devices.size() << " board update(s), " << forwarded_update_.samples
       << " samples; forwarding their mean to the root" << std::endl;
  // The root caps an update's weight at the samples its device declared:
  // boards that joined since then make the gateway declare again first.
  if (forwarded_update_.samples > upstream_->declared_samples()) {
    report_at_ = -1e9;  // the join declares today's sum
    upstream_->Rejoin();
  } else {
    SendForwarded();
  }
  PublishStatus();
}

void CoordinatorServer::SendForwarded() {
  if (upstream_->declared_samples() < forwarded_update_.samples) {
    if (upstream_->joined()) {
      report_at_ = -1e9;
      upstream_->Rejoin();
    }
    return;
  }
  forwarded_sent_ = upstream_->Send(forwarded_update_);
  if (forwarded_sent_) ++updates_forwarded_;
}

nlohmann::json CoordinatorServer::GatewayJson() const {
  if (!gateway()) return nullptr;
  nlohmann::json j = upstream_->ToJson();
  j["root_open_round"] = root_round_;
  j["root_final"] = root_final_;
  j["forwarded_round"] = forwarded_ ? nlohmann::json(forwarded_update_.round) : nlohmann::json();
  j["updates_forwarded"] = updates_forwarded_;
  j["root_rejects"] = root_rejects_;
  return j;
}

}  // namespace fedsgd
