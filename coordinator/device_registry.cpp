// DeviceRegistry (see device_registry.h).
#include "device_registry.h"

#include <algorithm>

namespace fedsgd {

nlohmann::json DeviceInfo::ToJson(double now) const {
  return {{"id", id},
          {"address", address},
          {"state", online ? state : "offline"},
          {"online", online},
          {"last_seen_seconds_ago", now - last_seen},
          {"software", software},
          {"threads", threads},
          {"samples", samples},
          {"joins", joins},
          {"rounds_joined", rounds_joined},
          {"updates_accepted", updates_accepted},
          {"updates_rejected", updates_rejected},
          {"rejected_by_reason", rejected_by_reason},
          {"bytes_in", bytes_in},
          {"last_loss", last_loss},
          {"last_staleness", last_staleness},
          {"samples_per_second", samples_per_second},
          {"progress", progress},
          {"round", round},
          {"heartbeat_ms", heartbeat_ms},
          {"gateway", boards.has_value()},
          {"boards", boards ? nlohmann::json(*boards) : nlohmann::json()}};
}

DeviceInfo& DeviceRegistry::Join(const wire::Join& join, const std::string& routing_id,
                                 const std::string& address, double now) {
  DeviceInfo& d = devices_[join.device];
  d.id = join.device;
  d.routing_id = routing_id;
  if (!address.empty()) d.address = address;
  d.software = join.software;
  d.threads = join.threads;
  d.samples = join.samples;
  d.boards = join.boards;
  if (!d.online) ++online_;
  d.online = true;
  d.state = "idle";
  d.last_seen = now;
  d.joins += 1;
  d.joined_at = now;
  d.active = false;
  return d;
}

bool DeviceRegistry::Admits(const std::string& id) const {
  return devices_.size() < max_devices_ || devices_.count(id) > 0;
}

DeviceInfo* DeviceRegistry::Touch(const std::string& id, double now) {
  DeviceInfo* d = Find(id);
  if (d) {
    if (!d->online) ++online_;
    d->online = true;
    d->last_seen = now;
  }
  return d;
}

DeviceInfo* DeviceRegistry::Find(const std::string& id) {
  auto it = devices_.find(id);
  return it == devices_.end() ? nullptr : &it->second;
}

const DeviceInfo* DeviceRegistry::Find(const std::string& id) const {
  auto it = devices_.find(id);
  return it == devices_.end() ? nullptr : &it->second;
}

const DeviceInfo* DeviceRegistry::FindByRoutingId(const std::string& routing_id) const {
  for (const auto& [id, d] : devices_) {
    if (d.routing_id == routing_id) return &d;
  }
  return nullptr;
}

void DeviceRegistry::CountReject(const std::string& id, wire::RejectReason reason) {
  const std::string name(wire::ToString(reason));
  rejects_[name] += 1;
  if (DeviceInfo* d = Find(id)) {
    d->updates_rejected += 1;
    d->rejected_by_reason[name] += 1;
  }
}

std::vector<std::string> DeviceRegistry::ExpireSilent(double now) {
  std::vector<std::string> expired;
  for (auto& [id, d] : devices_) {
    const double allowed = std::max(timeout_, 3.0 * d.heartbeat_ms / 1000.0);
    if (d.online && now - d.last_seen > allowed) {
      MarkOffline(d);
      expired.push_back(id);
    }
  }
  return expired;
}

std::vector<std::string> DeviceRegistry::Forget(double now) {
  std::vector<std::string> forgotten;
  for (auto it = devices_.begin(); it != devices_.end();) {
    const DeviceInfo& d = it->second;
    const bool never_spoke = !d.active && now - d.joined_at > kSilentJoinTimeouts * timeout_;
    const bool long_gone = !d.online && now - d.last_seen > forget_offline_after_;
    if (never_spoke || long_gone) {
      if (d.online) --online_;
      forgotten.push_back(it->first);
      it = devices_.erase(it);
    } else {
      ++it;
    }
  }
  forgotten_ += forgotten.size();
  return forgotten;
}

void DeviceRegistry::MarkOffline(DeviceInfo& d) {
  if (d.online) --online_;
  d.online = false;
}

std::uint64_t DeviceRegistry::rejected_total() const {
  std::uint64_t n = 0;
  for (const auto& [reason, count] : rejects_) n += count;
  return n;
}

nlohmann::json DeviceRegistry::ToJson(double now) const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [id, d] : devices_) out.push_back(d.ToJson(now));
  return out;
}

}  // namespace fedsgd
