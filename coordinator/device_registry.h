// DeviceRegistry: what the coordinator knows about each device.
//
// A device is known from its Join until it is forgotten. It is online while
// it keeps sending (any message counts as a sign of life) and goes offline
// after `heartbeat_timeout` seconds of silence. So that joins with made-up
// ids cannot grow it without bound (docs/security.md), the registry holds
// at most `max_devices` devices, and Forget removes a device that never sent
// a heartbeat or an update within kSilentJoinTimeouts heartbeat timeouts of
// its Join, and one offline for longer than `forget_offline_after` seconds;
// a forgotten device that comes back joins again. Counters never go down
// while a device is known; the totals by reason never go down. Times are
// seconds on the caller's monotonic clock, so tests can drive it with a fake
// one. Memory: about 1 KB a device.
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
#include "token_bucket.h"

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
  std::uint64_t last_staleness = 0;  // versions behind, of its latest accepted update (async)
  double samples_per_second = 0;     // as the device reports it
  double progress = 0;
  std::uint64_t round = 0;  // the round the device last reported
  double joined_at = 0;     // its latest Join
  bool active = false;      // sent a heartbeat or an update since its latest Join
  // Pace steering: the heartbeat interval (ms) this device was last told to
  // keep, 0 = the coordinator's --heartbeat-ms; it is offline after the
  // longer of the registry's timeout and 3 of these intervals of silence.
  int heartbeat_ms = 0;
  // A gateway (docs/protocol.md "Gateways"): the boards online behind it,
  // from its latest Join or heartbeat; absent for a daemon.
  std::optional<std::uint64_t> boards;
  // FetchModel requests this device may make: each answer is a whole model.
  TokenBucket fetches{kFetchesPerSecond, kFetchBurst};

  static constexpr double kFetchesPerSecond = 2;
  static constexpr double kFetchBurst = 2;

  nlohmann::json ToJson(double now) const;
};

class DeviceRegistry {
 public:
  // A device that joined but never sent a heartbeat nor an update is
  // forgotten after this many heartbeat timeouts.
  static constexpr double kSilentJoinTimeouts = 3;

  explicit DeviceRegistry(double heartbeat_timeout, std::size_t max_devices = 10000,
                          double forget_offline_after = 600)
      : timeout_(heartbeat_timeout),
        max_devices_(max_devices),
        forget_offline_after_(forget_offline_after) {}

  // Whether a Join from `id` may be registered: it is known, or there is
  // room for one more device.
  bool Admits(const std::string& id) const;
  // Registers or refreshes a device from its Join. Precondition: Admits(id).
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
  // Removes the devices that joined and never spoke since, or have been
  // offline too long (see above); returns their ids.
  std::vector<std::string> Forget(double now);

  // Devices online now; kept as a count (constant time: it is asked for at
  // every heartbeat).
  std::size_t online() const { return online_; }
  // Marks a device offline (its key was removed, say); it is online again
  // at its next Join or Touch. Only this may clear DeviceInfo::online.
  void MarkOffline(DeviceInfo& device);
  std::size_t size() const { return devices_.size(); }
  const std::map<std::string, DeviceInfo>& devices() const { return devices_; }
  const std::map<std::string, std::uint64_t>& rejected_by_reason() const { return rejects_; }
  std::uint64_t rejected_total() const;
  std::uint64_t forgotten() const { return forgotten_; }  // devices removed by Forget
  std::size_t max_devices() const { return max_devices_; }
  nlohmann::json ToJson(double now) const;

 private:
  double timeout_;
  std::size_t max_devices_;
  double forget_offline_after_;
  std::uint64_t forgotten_ = 0;
  std::size_t online_ = 0;
  std::map<std::string, DeviceInfo> devices_;
  std::map<std::string, std::uint64_t> rejects_;  // all refused messages, by reason
};

}  // namespace fedsgd
