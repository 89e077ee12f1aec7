// The coordinator's side of CURVE (see coordinator_server.h and
// docs/security.md): setting up the sockets and the ZAP handler, binding
// each message's device id to its connection's key, and applying enrolment
// and revocation (SIGHUP). The loop is in coordinator_server.cpp.
#include "coordinator_server.h"
#include "fedsgd/curve_keys.h"
#include "fedsgd/curve_socket.h"

namespace fedsgd {

void CoordinatorServer::SetUpSecurity() {
  if (!options_.curve()) {
    if (!options_.LoopbackOnly()) {
      log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: --insecure: listening on "
           << options_.listen << " / " << options_.publish
           << " without CURVE: anyone who can reach it can read the model and send updates\n";
    }
    return;
  }
  const curve::KeyPair own = curve::LoadSecretKey(options_.curve_key);
  keys_ = std::make_unique<KeyStore>(options_.authorized_keys);
  const auto keys = keys_->Snapshot();
  keys_generation_ = keys->generation;
  for (const std::string& problem : keys->problems) {
    log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: refused: " << problem << "\n";
  }
  // The handler must be bound before the first handshake can happen.
  zap_ = std::make_unique<ZapHandler>(context_, *keys_);
  curve::MakeServer(router_, own, kZapDomain);
  curve::MakeServer(pub_, own, kZapDomain);
  log_ << "fedsgd-coordinator: CURVE on, public key " << curve::KeyFingerprint(own.public_key)
       << "..., " << keys->key_by_id.size() << " device(s) authorised in "
       << options_.authorized_keys << "\n";
}

bool CoordinatorServer::CheckIdentity(zmq::message_t& frame, const wire::Message& message,
                                      const zmq::message_t& routing_id) {
  if (!keys_) return true;
  const std::string claimed = std::visit(
      [](const auto& m) -> std::string {
        if constexpr (requires { m.device; }) {
          return m.device;
        } else {
          return "";
        }
      },
      message);
  std::string user_id;
  try {
    const char* value = frame.gets("User-Id");
    user_id = value ? value : "";
  } catch (const zmq::error_t&) {
    // No User-Id: cannot happen on a CURVE socket with ZAP; refuse anyway.
  }
  std::string detail;
  if (!keys_->Snapshot()->Authorized(user_id)) {
    detail = "the key of device '" + user_id + "' is no longer authorised";
  } else if (claimed != user_id) {
    detail = "this connection is authenticated as device '" + user_id + "', not '" + claimed + "'";
  } else {
    return true;
  }
  DeviceRegistry& devices = manager_->devices();
  devices.CountReject(user_id, wire::RejectReason::kIdentityMismatch);
  if (DeviceInfo* d = devices.Find(user_id); d && !keys_->Snapshot()->Authorized(user_id)) {
    devices.MarkOffline(*d);
  }
  log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: refused a "
       << wire::KindName(message) << ": identity_mismatch: " << detail << "\n";
  Reply(routing_id, wire::Reject{wire::RejectReason::kIdentityMismatch, detail});
  return false;
}

void CoordinatorServer::ApplyKeyChanges(std::atomic<bool>* reload) {
  if (reload && reload->exchange(false)) {
    if (zap_) {
      zap_->RequestReload();
    } else {
      log_ << "fedsgd-coordinator: SIGHUP: no --authorized-keys to re-read\n";
    }
  }
  if (!zap_) return;
  for (const std::string& line : zap_->TakeLog()) {
    Warn("handshake_refused") << "fedsgd-coordinator: " << line << "\n";
  }
  const auto keys = keys_->Snapshot();
  if (keys->generation == keys_generation_) return;
  keys_generation_ = keys->generation;
  // A connection authenticated before the revocation stays open (libzmq
  // does not re-ask ZAP): CheckIdentity refuses its messages from now on.
  for (const auto& [id, device] : manager_->devices().devices()) {
    if (device.online && !keys->Authorized(id)) {
      manager_->devices().MarkOffline(*manager_->devices().Find(id));
      log_ << LogPriority(LogLevel::kWarning) << "fedsgd-coordinator: device " << id
           << ": key removed from " << options_.authorized_keys << ", marked offline\n";
    }
  }
}

}  // namespace fedsgd
