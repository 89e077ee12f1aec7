// UpstreamLink (see upstream_link.h).
#include "upstream_link.h"

#include <algorithm>
#include <cstdio>

#include "fedsgd/broadcast_codec.h"
#include "fedsgd/curve_socket.h"
#include "fedsgd/endpoint.h"
#include "fedsgd/error.h"
#include "fedsgd/plan.h"
#include "fedsgd/service_notifier.h"
#include "fedsgd/socket_options.h"

namespace fedsgd {
UpstreamLink::UpstreamLink(zmq::context_t& context, UpstreamConfig config, std::ostream& log)
    : context_(context),
      config_(std::move(config)),
      log_(log),
      backoff_(0.25, 8.0, 0.25, std::hash<std::string>{}(config_.id)) {}

UpstreamLink::~UpstreamLink() = default;

void UpstreamLink::Configure(zmq::socket_t& socket) const {
  socket.set(zmq::sockopt::linger, 0);
  if (config_.keys) curve::MakeClient(socket, *config_.keys, config_.server_key);
  ApplySocketLimits(socket, ClientReceiveLimits());
}

void UpstreamLink::Connect(double now) {
  dealer_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  Configure(*dealer_);
  // Nothing is queued for a root that is not there: a send fails at once.
  dealer_->set(zmq::sockopt::immediate, 1);
  dealer_->connect(config_.endpoint);
  reconnect_at_ = -1;
  joined_ = false;
  join_sent_at_ = -1;
  last_reply_ = now;
}

void UpstreamLink::Disconnect() {
  sub_.reset();
  dealer_.reset();
  joined_ = false;
}

bool UpstreamLink::Send(wire::Message message) {
  if (!dealer_) return false;
  try {
    return wire::Send(*dealer_, std::move(message));
  } catch (const zmq::error_t& e) {
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << config_.id
         << ": send to the root failed: " << e.what() << std::endl;
    return false;
  }
}

void UpstreamLink::Fetch(double now) {
  if (!joined_ || now - fetch_sent_at_ < std::max(1.0, heartbeat_ms_ / 1000.0)) return;
  if (Send(wire::FetchModel{config_.id})) fetch_sent_at_ = now;
}

wire::Limits UpstreamLink::ModelLimits() const {
  if (!joined_ || parameter_count_ == 0) return wire::Limits{};
  wire::Limits limits{parameter_count_};
  limits.model_encoding = model_encoding_;
  return limits;
}

void UpstreamLink::OnWelcome(const wire::Welcome& w, double now) {
  joined_ = true;
  backoff_.Reset();
  heartbeat_ms_ = w.heartbeat_ms;
  last_heartbeat_ = now - heartbeat_ms_ / 1000.0 + 0.2;  // the first one soon
  fetch_sent_at_ = -1e9;
  run_id_ = w.run_id;
  parameter_count_ = 0;
  model_encoding_.reset();
  try {
    const Plan plan = Plan::FromJson(w.plan);
    parameter_count_ = plan.architecture().ParameterCount();
    model_encoding_ = wire::ParseBroadcastCodec(plan.broadcast_codec);
  } catch (const Error&) {
    // The gateway refuses the plan itself, with the reason (coordinator_gateway.cpp).
  }
  const std::string endpoint = ResolvePublishEndpoint(w.publish_endpoint, config_.endpoint);
  try {
    sub_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::sub);
    Configure(*sub_);
    sub_->set(zmq::sockopt::subscribe, "");
    sub_->connect(endpoint);
  } catch (const zmq::error_t& e) {
    sub_.reset();
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << config_.id
         << ": cannot subscribe to the root's " << endpoint << ": " << e.what()
         << "; will fetch models instead" << std::endl;
  }
}

void UpstreamLink::Receive(std::vector<wire::Message>& events) {
  const auto take = [&](zmq::socket_t& socket, bool reply) {
    while (auto frames = wire::ReceiveFrames(socket, zmq::recv_flags::dontwait)) {
      wire::DecodeResult d = wire::Decode(*frames, ModelLimits());
      if (!d.ok()) {
        ++bad_messages_;
        log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << config_.id
             << ": dropped a bad message from the root: " << wire::ToString(d.error().reason)
             << ": " << d.error().detail << std::endl;
        continue;
      }
      wire::Message& m = d.message();
      const bool kind_ok =
          reply ? (std::holds_alternative<wire::Welcome>(m) ||
                   std::holds_alternative<wire::Model>(m) || std::holds_alternative<wire::Ack>(m) ||
                   std::holds_alternative<wire::Reject>(m))
                : std::holds_alternative<wire::Model>(m);
      if (!kind_ok) {
        ++bad_messages_;
        continue;
      }
      events.push_back(std::move(m));
      // A welcome changes the limits the next message is decoded with.
      if (reply && std::holds_alternative<wire::Welcome>(events.back())) return true;
    }
    return false;
  };
  while (dealer_ && take(*dealer_, true)) {
  }
  if (sub_) take(*sub_, false);
}

void UpstreamLink::Poll(double now, const GatewayReport& report,
                        std::vector<wire::Message>& events) {
  if (!dealer_) {
    if (now < reconnect_at_) return;
    Connect(now);
  }
  const std::size_t first = events.size();
  Receive(events);
  for (std::size_t i = first; i < events.size(); ++i) {
    last_reply_ = now;
    if (auto* w = std::get_if<wire::Welcome>(&events[i])) {
      OnWelcome(*w, now);
    } else if (auto* a = std::get_if<wire::Ack>(&events[i])) {
      if (a->heartbeat_ms) heartbeat_ms_ = a->heartbeat_ms;
    } else if (auto* r = std::get_if<wire::Reject>(&events[i])) {
      // A restarted root does not know this gateway: join again.
      if (r->reason == wire::RejectReason::kUnknownDevice) Rejoin();
    } else if (std::holds_alternative<wire::Model>(events[i])) {
      fetch_sent_at_ = -1e9;
    }
  }
  if (!dealer_) return;
  const double beat = heartbeat_ms_ / 1000.0;
  if (!joined_) {
    if (join_sent_at_ < 0 || now - join_sent_at_ > std::max(1.0, beat)) {
      wire::Join j{config_.id, 1, report.samples, "fedsgd-gateway " FEDSGD_VERSION};
      j.boards = report.boards;
      if (Send(std::move(j))) {
        join_sent_at_ = now;
        declared_samples_ = report.samples;
      }
    }
  } else if (now - last_heartbeat_ >= beat) {
    wire::Heartbeat h{config_.id,   report.state,
                      report.round, report.samples_per_second,
                      report.loss,  std::clamp(report.progress, 0.0, 1.0)};
    h.boards = report.boards;
    Send(std::move(h));
    last_heartbeat_ = now;
  }
  const double silence = std::max(config_.min_silence, 3.0 * beat);
  if (now - last_reply_ > silence) {
    const double delay = backoff_.Next();
    char text[160];
    std::snprintf(text, sizeof text, "the root has been silent for %.1f s; reconnecting in %.2f s",
                  now - last_reply_, delay);
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << config_.id << ": "
         << text << std::endl;
    if (config_.keys && !hint_logged_) {
      log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: gateway " << config_.id
           << ": a refused CURVE handshake looks like silence: check --upstream-key and "
              "--upstream-server-key, and that the root's --authorized-keys has this gateway's "
              "public key as "
           << config_.id << ".key" << std::endl;
      hint_logged_ = true;
    }
    Disconnect();
    reconnect_at_ = now + delay;
    ++reconnects_;
  }
}

nlohmann::json UpstreamLink::ToJson() const {
  return {{"endpoint", config_.endpoint},
          {"gateway_id", config_.id},
          {"curve", config_.keys.has_value()},
          {"joined", joined_},
          {"root_run_id", run_id_},
          {"declared_samples", declared_samples_},
          {"heartbeat_ms", heartbeat_ms_},
          {"reconnects", reconnects_},
          {"bad_messages", bad_messages_}};
}

}  // namespace fedsgd
