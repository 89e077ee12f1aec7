// UpstreamLink: a gateway's side of docs/protocol.md towards its root
// coordinator (docs/protocol.md "Gateways"). The gateway takes part at the
// root as one device: it joins (declaring its boards' samples in all and how
// many boards it has), heartbeats, receives the root's Model broadcasts,
// fetches a model it missed and sends one update per round.
//
// It holds the DEALER and SUB a daemon would hold. When the root stays
// silent for 3 heartbeat intervals (at least 3 s) both sockets are dropped
// and the link joins again on fresh ones after a capped exponential backoff
// with jitter, as a daemon does: a restarted root is never a reason to stop.
//
// Not thread-safe: the coordinator's loop thread owns it and both sockets.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "fedsgd/backoff.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/wire.h"

namespace fedsgd {

struct UpstreamConfig {
  std::string endpoint;  // the root's ROUTER (its --listen)
  std::string id;        // this gateway's device id at the root
  // CURVE: this gateway's key pair and the root's public key; none: plain.
  std::optional<curve::KeyPair> keys;
  std::string server_key;
  double min_silence = 3.0;  // seconds, the floor of the silence rule
};

// What the gateway says of itself in its joins and heartbeats.
struct GatewayReport {
  std::string state = "idle";  // idle | training
  std::uint64_t round = 0;     // the round it works on (or last did)
  std::uint64_t samples = 0;   // its boards' declared samples in all
  std::uint64_t boards = 0;    // its boards online
  double samples_per_second = 0;
  double loss = 0;
  double progress = 0;  // 0..1: the round's updates in over the quorum
};

class UpstreamLink {
 public:
  UpstreamLink(zmq::context_t& context, UpstreamConfig config, std::ostream& log);
  ~UpstreamLink();
  UpstreamLink(const UpstreamLink&) = delete;
  UpstreamLink& operator=(const UpstreamLink&) = delete;

  // One turn of the loop (never blocks): takes what the root sent (decoded
  // Welcome, Model, Ack and Reject messages are appended to `events`, in
  // order; a bad message is dropped, logged and counted), then joins when
  // not joined, heartbeats when one is due and reconnects after silence.
  // The samples a join declares are report.samples.
  void Poll(double now, const GatewayReport& report, std::vector<wire::Message>& events);
  // Joins again at the next Poll (its boards' samples grew past what the
  // last join declared: the root caps an update's weight at it).
  void Rejoin() { joined_ = false, join_sent_at_ = -1; }
  // Sends an update (or any request) to the root; false when not joined or
  // the root is not connected (nothing is queued for an absent root).
  bool Send(wire::Message message);
  // Asks for the current model (the reply is a Model event); at most once
  // per heartbeat interval while one is outstanding.
  void Fetch(double now);

  bool joined() const { return joined_; }
  std::uint64_t declared_samples() const { return declared_samples_; }
  std::uint64_t bad_messages() const { return bad_messages_; }
  std::uint64_t reconnects() const { return reconnects_; }
  const UpstreamConfig& config() const { return config_; }
  // For /v1/status: endpoint, id, joined, run, heartbeat, counters.
  nlohmann::json ToJson() const;

 private:
  void Connect(double now);
  void Disconnect();
  void Configure(zmq::socket_t& socket) const;
  void Receive(std::vector<wire::Message>& events);
  // Decode limits: once joined, the model's size and the plan's broadcast
  // encoding for a Model; anything the wire allows before.
  wire::Limits ModelLimits() const;
  void OnWelcome(const wire::Welcome& w, double now);

  zmq::context_t& context_;
  UpstreamConfig config_;
  std::ostream& log_;
  std::unique_ptr<zmq::socket_t> dealer_;
  std::unique_ptr<zmq::socket_t> sub_;
  Backoff backoff_;
  double reconnect_at_ = 0;  // >= 0 while disconnected: connect then
  bool joined_ = false;
  double join_sent_at_ = -1;
  double last_reply_ = 0;
  double last_heartbeat_ = -1e9;
  double fetch_sent_at_ = -1e9;
  int heartbeat_ms_ = 1000;
  std::uint64_t declared_samples_ = 0;
  std::string run_id_;
  std::size_t parameter_count_ = 0;  // of the root's plan, once joined
  std::optional<wire::TensorEncoding> model_encoding_;
  std::uint64_t bad_messages_ = 0;
  std::uint64_t reconnects_ = 0;
  bool hint_logged_ = false;
};

}  // namespace fedsgd
