// Pace steering and upload flow control for large fleets (docs/protocol.md
// "Device selection"; Bonawitz et al. 2019, "Towards Federated Learning at
// Scale", section 2.3 "pace steering").
//
// IdleHeartbeatMs: the interval a device that is not training a round is
// told to heartbeat at, so that the whole fleet's idle heartbeats stay near
// max_rate per second however many devices are online; never below the
// configured base interval. A device training a round keeps the base (its
// progress is worth watching, and at most the invited devices do so).
//
// UploadSlots: with device selection a device that has an update asks
// first (a heartbeat in state "sending"); at most `slots` devices, and no
// more than the round still needs, hold the right to send at once, so the updates queued in ZeroMQ,
// and the coordinator's memory, stay bounded by slots x update size instead of growing with the
// round. A grant ends when the device's update arrives (Release) or after `grant_timeout` seconds
// without one.
//
// Not thread-safe: the coordinator's loop thread owns them.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace fedsgd {

// A factor in [0.9, 1.1) fixed per device id: spreads devices that would
// otherwise come back in step (FNV-1a of the id).
double PaceJitter(std::string_view device);

// base_ms, or online x 1000 / max_rate x PaceJitter(device) when that is
// longer; within [10, wire::kMaxIntervalMs].
int IdleHeartbeatMs(int base_ms, std::size_t online, double max_rate, std::string_view device);

// When a device refused a slot asks again: the time the `waiting` devices
// ahead of it take through `slots` slots at ~20 uploads per slot per second,
// x PaceJitter, within [20, 5000] ms.
int UploadRetryMs(std::size_t waiting, std::size_t slots, std::string_view device);

class UploadSlots {
 public:
  UploadSlots(std::size_t slots, double grant_timeout) : slots_(slots), timeout_(grant_timeout) {}

  // True when `device` may send its update now: it holds a grant already,
  // or fewer than min(slots, wanted) grants are held (grants older than the
  // timeout are freed first). `wanted` is the updates the round still
  // needs: granting more would only have them arrive after it closed.
  bool Grant(const std::string& device, double now, std::size_t wanted);
  // The device's update arrived (accepted or not): its slot is free.
  void Release(const std::string& device) { grants_.erase(device); }
  // A new round: no grant carries over.
  void Clear() { grants_.clear(); }
  std::size_t in_use() const { return grants_.size(); }
  std::size_t slots() const { return slots_; }
  std::uint64_t refused() const { return refused_; }  // asks told to come back

 private:
  std::size_t slots_;
  double timeout_;
  std::map<std::string, double> grants_;  // device -> granted at
  std::uint64_t refused_ = 0;
};

}  // namespace fedsgd
