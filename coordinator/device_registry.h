// DeviceRegistry: what the coordinator knows about each device.
//
// A device is known from its first Join until the coordinator exits. It is
// online while it keeps sending (any message counts as a sign of life) and
// goes offline after `heartbeat_timeout` seconds of silence. Counters never
// go down. Times are seconds on the caller's monotonic clock, so tests can
// drive it with a fake one.
//
// Not thread-safe: the coordinator's loop owns it; HTTP reads a JSON copy.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fedsgd/wire.h"

namespace fedsgd {

struct DeviceInfo {
  std::string id;
  std::string routing_id;  // the ROUTER's id for the peer (bytes), from its latest Join
  std::string address;     // the peer's IP address, when ZeroMQ reports it
  std::string software;
  int threads = 0;
  std::uint64_t samples = 0;  // the device's shard size, from Join
  bool online = false;
  std::string state = "idle";  // idle | training | sending, from heartbeats
  double last_seen = 0;
  std::uint64_t joins = 0;
  std::uint64_t rounds_joined = 0;  // rounds whose aggregate includes this device
  std::uint64_t updates_accepted = 0;
  std::uint64_t updates_rejected = 0;
  std::map<std::string, std::uint64_t> rejected_by_reason;
  std::uint64_t bytes_in = 0;
  double last_loss = 0;
  double samples_per_second = 0;  // as the device reports it
  double progress = 0;
  std::uint64_t round = 0;  // the round the device last reported

  nlohmann::json ToJson(double now) const;
};

class DeviceRegistry {
 public:
  explicit DeviceRegistry(double heartbeat_timeout) : timeout_(heartbeat_timeout) {}

  // Registers or refreshes a device from its Join.
  DeviceInfo& Join(const wire::Join& join, const std::string& routing_id,
                   const std::string& address, double now);
  // The device, marking it alive, or null if it never joined.
  DeviceInfo* Touch(const std::string& id, double now);
  DeviceInfo* Find(const std::string& id);
  const DeviceInfo* Find(const std::string& id) const;
  // The device whose latest Join or heartbeat came from this ROUTER routing
  // id, or null. For a message too broken to name its device. Linear: it is
  // only asked about refused messages.
  const DeviceInfo* FindByRoutingId(const std::string& routing_id) const;
  // Counts a refused message against a device (if known) and in the totals.
  void CountReject(const std::string& id, wire::RejectReason reason);
  // Marks devices silent for longer than the timeout offline; returns their ids.
  std::vector<std::string> ExpireSilent(double now);

  std::size_t online() const;
  std::size_t size() const { return devices_.size(); }
  const std::map<std::string, DeviceInfo>& devices() const { return devices_; }
  const std::map<std::string, std::uint64_t>& rejected_by_reason() const { return rejects_; }
  std::uint64_t rejected_total() const;
  nlohmann::json ToJson(double now) const;

 private:
  double timeout_;
  std::map<std::string, DeviceInfo> devices_;
  std::map<std::string, std::uint64_t> rejects_;  // all refused messages, by reason
};

}  // namespace fedsgd
