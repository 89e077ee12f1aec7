// What the coordinator publishes about itself (see coordinator_server.h):
// the /v1/status snapshot and the Prometheus metrics, handed to the HTTP
// threads through the StatusBoard. The loop is in coordinator_server.cpp.
#include <cstdio>

#include "coordinator_server.h"

namespace fedsgd {
namespace {

// Online gateways among a coordinator's devices, and the boards they report.
struct GatewayCounts {
  std::size_t gateways = 0;
  std::uint64_t boards = 0;
};

GatewayCounts CountGateways(const DeviceRegistry& devices) {
  GatewayCounts c;
  for (const auto& [id, d] : devices.devices()) {
    if (!d.boards || !d.online) continue;
    ++c.gateways;
    c.boards += *d.boards;
  }
  return c;
}

}  // namespace

void CoordinatorServer::PublishStatus() {
  const double now = Now();
  const DeviceRegistry& devices = manager_->devices();
  nlohmann::json status = {
      {"run_id", manager_->run_id()},
      {"round", manager_->version()},
      {"rounds", gateway() ? nlohmann::json() : nlohmann::json(manager_->settings().rounds)},
      {"model_version", manager_->version()},
      {"open_round", manager_->open_round()},
      {"state", ToString(manager_->phase())},
      {"updates_in_round", manager_->accepted()},
      {"quorum", manager_->open_round() ? manager_->quorum_target() : 0},
      {"devices_online", devices.online()},
      {"devices_total", devices.size()},
      {"model", plan_.architecture().ToString()},
      {"parameters", manager_->params().size()},
      {"plan", plan_.ToJson()},
      {"mode", plan_.mode},
      {"updates_clipped", updates_clipped_},
      {"listen", listen_endpoint()},
      {"publish", publish_endpoint()},
      {"database", options_.db},
      {"resumed", resumed_},
      {"uptime_seconds", now},
      {"updates_accepted", updates_accepted_},
      {"updates_rejected", devices.rejected_total()},
      {"rejected_by_reason", devices.rejected_by_reason()},
      {"rounds_refused", rounds_refused_},
      {"devices_forgotten", devices.forgotten()},
      {"max_devices", devices.max_devices()},
      {"frames_dropped", frames_dropped_},
      {"replies_dropped", replies_dropped_},
      {"connections_dropped", monitor_ ? monitor_->dropped() : 0},
      {"bytes_in", bytes_in_},
      {"bytes_out", bytes_out_},
      {"models_sent", models_sent_},
      {"test_accuracy", nullptr},
      {"test_loss", nullptr},
      {"train_loss", nullptr},
      {"last_round", nullptr},
      {"privacy", manager_->privacy()},
      {"gateway", GatewayJson()},
  };
  const GatewayCounts gateways = CountGateways(devices);
  status["gateways_online"] = gateways.gateways;
  status["boards_behind_gateways"] = gateways.boards;
  if (last_round_) {
    if (last_round_->test_accuracy) status["test_accuracy"] = *last_round_->test_accuracy;
    if (last_round_->test_loss) status["test_loss"] = *last_round_->test_loss;
    status["train_loss"] = last_round_->train_loss;
    nlohmann::json last = last_round_->ToJson();
    last["receive_seconds"] = last_receive_seconds_;
    last["evaluate_seconds"] = last_eval_seconds_;
    last["commit_seconds"] = last_commit_seconds_;
    last["broadcast_seconds"] = last_broadcast_seconds_;
    // The coordinator's own time in the round; evaluation is reported apart
    // because it depends on --eval-data, not on the federation.
    last["coordinator_seconds"] = last_receive_seconds_ + last_round_->aggregate_seconds +
                                  last_commit_seconds_ + last_broadcast_seconds_;
    last["bytes_per_update"] = BytesPerUpdate(*last_round_);
    last["bytes_per_update_vs_parameters"] = BytesPerUpdate(*last_round_) / ParameterBytes();
    status["last_round"] = std::move(last);
  }
  // The device list costs a JSON object per device: for fleets over
  // kLargeFleet devices it is refreshed every 2 s, not every 0.25 s.
  std::optional<nlohmann::json> list;
  if (devices.size() <= kLargeFleet || now - devices_published_at_ >= 2.0) {
    list = devices.ToJson(now);
    devices_published_at_ = now;
  }
  board_.Publish(std::move(status), std::move(list), Metrics());
}

std::string CoordinatorServer::Metrics() const {
  const DeviceRegistry& devices = manager_->devices();
  std::string out;
  char line[256];
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                  type, name, value);
    out += line;
  };
  auto u = [](std::uint64_t v) { return static_cast<double>(v); };
  metric("fedsgd_round", "gauge", "Newest committed round (the model version).",
         u(manager_->version()));
  metric("fedsgd_rounds_target", "gauge",
         "Rounds this run is to complete (0: a gateway's root decides).",
         u(gateway() ? 0 : manager_->settings().rounds));
  metric("fedsgd_open_round", "gauge", "The round open for training, 0 if none.",
         u(manager_->open_round()));
  metric("fedsgd_rounds_completed_total", "counter", "Rounds committed by this process.",
         u(rounds_committed_));
  metric("fedsgd_devices_online", "gauge", "Devices heard from recently.", u(devices.online()));
  metric("fedsgd_devices_known", "gauge", "Devices that have joined.", u(devices.size()));
  const GatewayCounts gateways = CountGateways(devices);
  metric("fedsgd_gateways_online", "gauge", "Online devices that are gateways.",
         u(gateways.gateways));
  metric("fedsgd_boards_behind_gateways", "gauge", "Boards the online gateways report.",
         u(gateways.boards));
  if (gateway()) {
    metric("fedsgd_gateway_updates_forwarded_total", "counter",
           "Round aggregates this gateway sent to its root.", u(updates_forwarded_));
    metric("fedsgd_gateway_root_rejects_total", "counter",
           "Messages of this gateway the root refused.", u(root_rejects_));
  }
  metric("fedsgd_updates_accepted_total", "counter", "Updates accepted into an aggregate.",
         u(updates_accepted_));
  out +=
      "# HELP fedsgd_updates_rejected_total Messages refused, by reason.\n"
      "# TYPE fedsgd_updates_rejected_total counter\n";
  for (int i = 0; i < wire::kRejectReasonCount; ++i) {
    const std::string reason(wire::ToString(static_cast<wire::RejectReason>(i)));
    const auto it = devices.rejected_by_reason().find(reason);
    std::snprintf(
        line, sizeof line, "fedsgd_updates_rejected_total{reason=\"%s\"} %llu\n", reason.c_str(),
        static_cast<unsigned long long>(it == devices.rejected_by_reason().end() ? 0 : it->second));
    out += line;
  }
  metric("fedsgd_rounds_refused_total", "counter",
         "Rounds refused because their aggregate was not finite (run again).", u(rounds_refused_));
  metric("fedsgd_devices_forgotten_total", "counter",
         "Devices removed: silent since joining, or offline too long.", u(devices.forgotten()));
  metric("fedsgd_frames_dropped_total", "counter",
         "Frames beyond the protocol's maximum per message, dropped unread.", u(frames_dropped_));
  metric("fedsgd_replies_dropped_total", "counter",
         "Replies not sent: the peer's queue was full or it was gone.", u(replies_dropped_));
  metric("fedsgd_connections_dropped_total", "counter",
         "ROUTER connections closed (peer left, frame over the size limit, missed heartbeats) "
         "or failed handshakes.",
         u(monitor_ ? monitor_->dropped() : 0));
  metric("fedsgd_received_bytes_total", "counter", "Bytes of requests received.", u(bytes_in_));
  metric("fedsgd_sent_bytes_total", "counter", "Bytes of model weights sent.", u(bytes_out_));
  metric("fedsgd_models_sent_total", "counter",
         "Models sent: welcomes, broadcasts and fetch replies.", u(models_sent_));
  out +=
      "# HELP fedsgd_round_duration_seconds Seconds from opening a round to committing it.\n"
      "# TYPE fedsgd_round_duration_seconds histogram\n";
  for (std::size_t b = 0; b < std::size(kDurationBuckets); ++b) {
    std::snprintf(
        line, sizeof line, "fedsgd_round_duration_seconds_bucket{le=\"%g\"} %llu\n",
        kDurationBuckets[b],
        static_cast<unsigned long long>(duration_buckets_.empty() ? 0 : duration_buckets_[b]));
    out += line;
  }
  std::snprintf(
      line, sizeof line,
      "fedsgd_round_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
      "fedsgd_round_duration_seconds_sum %.17g\nfedsgd_round_duration_seconds_count %llu\n",
      static_cast<unsigned long long>(rounds_committed_), duration_sum_,
      static_cast<unsigned long long>(rounds_committed_));
  out += line;
  metric("fedsgd_updates_clipped_total", "counter",
         "Updates scaled down to the norm bound (--norm-bound) by this process.",
         u(updates_clipped_));
  if (last_round_ && last_round_->aggregation.contains("norm_bound") &&
      last_round_->aggregation["norm_bound"].is_number()) {
    metric("fedsgd_norm_bound", "gauge", "L2 norm bound applied to the last round's updates.",
           last_round_->aggregation["norm_bound"].get<double>());
  }
  const double aggregate = last_round_ ? last_round_->aggregate_seconds : 0;
  metric("fedsgd_aggregate_seconds", "gauge", "Aggregation time of the last round.", aggregate);
  metric("fedsgd_commit_seconds", "gauge", "SQLite commit time of the last round.",
         last_commit_seconds_);
  metric("fedsgd_broadcast_seconds", "gauge", "Broadcast time of the last model.",
         last_broadcast_seconds_);
  if (last_round_ && last_round_->test_accuracy) {
    metric("fedsgd_test_accuracy", "gauge", "Test accuracy of the newest model.",
           *last_round_->test_accuracy);
  }
  if (last_round_ && last_round_->test_loss) {
    metric("fedsgd_test_loss", "gauge", "Test loss of the newest model.", *last_round_->test_loss);
  }
  if (const nlohmann::json privacy = manager_->privacy(); privacy.is_object()) {
    metric("fedsgd_privacy_epsilon", "gauge",
           "Differential privacy spent so far: epsilon at fedsgd_privacy_delta (RDP accountant).",
           privacy["epsilon"].get<double>());
    metric("fedsgd_privacy_delta", "gauge", "The delta of fedsgd_privacy_epsilon.",
           privacy["delta"].get<double>());
    metric("fedsgd_privacy_clip", "gauge", "The L2 clip norm of the next round's updates.",
           privacy["clip"].get<double>());
  }
  if (last_round_ && last_round_->aggregation.contains("staleness_mean")) {
    metric("fedsgd_update_staleness_mean", "gauge",
           "Async: mean staleness (versions) of the updates the newest version applied.",
           last_round_->aggregation["staleness_mean"].get<double>());
    metric("fedsgd_update_staleness_max", "gauge",
           "Async: the largest staleness among the updates the newest version applied.",
           last_round_->aggregation["staleness_max"].get<double>());
  }
  if (last_round_) {
    metric("fedsgd_train_loss", "gauge", "Sample-weighted training loss of the last round.",
           last_round_->train_loss);
  }
  if (const auto f = last_round_ ? last_round_->federated_evaluation() : std::nullopt) {
    metric("fedsgd_federated_accuracy", "gauge",
           "Sample-weighted accuracy on the devices' held-out data of the model the last round "
           "trained from.",
           f->accuracy);
    metric("fedsgd_federated_loss", "gauge",
           "Sample-weighted loss on the devices' held-out data of that model.", f->loss);
    metric("fedsgd_federated_accuracy_min", "gauge", "Lowest device's held-out accuracy.",
           f->min_accuracy);
    metric("fedsgd_federated_accuracy_median", "gauge", "Median device's held-out accuracy.",
           f->median_accuracy);
    metric("fedsgd_federated_accuracy_max", "gauge", "Highest device's held-out accuracy.",
           f->max_accuracy);
  }
  if (const auto p = last_round_ ? last_round_->personalisation() : std::nullopt) {
    metric("fedsgd_personal_accuracy", "gauge",
           "Mean over devices of their personalised model's held-out accuracy (last round).",
           p->personal_accuracy);
    metric("fedsgd_personal_global_accuracy", "gauge",
           "Mean over the same devices of the global model's held-out accuracy.",
           p->global_accuracy);
    metric("fedsgd_personal_worse_share", "gauge",
           "Share of those devices whose personalised model scores below the global one.",
           p->worse_share());
  }
  return out;
}

}  // namespace fedsgd
