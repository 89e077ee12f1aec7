// RoundManager: the synchronous round logic of docs/protocol.md, without
// sockets, database or wall clock.
//
// The coordinator's loop feeds it events (joins and heartbeats go to
// devices(), updates to OnUpdate) and asks it what to do: ShouldOpen /
// OpenRound, ShouldClose / CloseRound, NeedsRebroadcast. CloseRound
// aggregates into a *new* parameter vector; only Commit (called after the
// database has committed it) makes it the global model, so a failed commit
// leaves the model as it was (Discard). The aggregate is applied by the
// plan's ServerOptimizer; the state carried between rounds (optimiser
// moments, the norm bound's history: ServerState) is updated in a copy that
// travels in ClosedRound and is installed by Commit too. `now` is seconds on a monotonic
// clock, passed in, so tests drive time by hand.
//
// Asynchronous mode (plan.async(), FedBuff; docs/protocol.md): a "round"
// is the buffer of one model version. It opens as soon as the previous
// version is committed and takes updates trained from any version at most
// max_staleness old, each weighted by its samples x staleness_weight(s);
// it closes with buffer_target() updates (or at the deadline with at least
// min_updates). A device may send one update per model version it trained
// from; RestoreApplied makes a restarted coordinator refuse an update that
// an earlier process already committed (duplicate), so nothing is applied
// twice.
//
// Device selection (plan.selection(); Bonawitz et al. 2019): OpenRound
// invites ceil(over_selection x N) of the online devices, drawn uniformly at
// random with a generator seeded by (plan seed, run, round): the same fleet
// gives the same choice, and the seed is in the round's record. The round
// closes with N updates (fewer if invited devices went offline: quorum x
// those online); an update from a device not invited is refused
// (not_selected).
//
// When the plan asks for differential privacy (plan.dp()), the aggregator
// given is wrapped in a DpAggregator, and each closed round's record carries
// its privacy figures (record.privacy, see PrivacyJson) including the state
// a restart needs (RestorePrivacy).
//
// Not thread-safe: one loop thread owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "aggregator.h"
#include "checkpoint_store.h"
#include "device_registry.h"
#include "dp_aggregator.h"
#include "fedsgd/plan.h"
#include "fedsgd/staleness.h"
#include "fedsgd/wire.h"
#include "privacy_accountant.h"
#include "server_optimizer.h"
#include "server_state.h"

namespace fedsgd {

struct RoundSettings {
  std::uint64_t rounds = 10;     // the run ends when this round is committed
  std::size_t min_devices = 1;   // online devices needed to open a round
  double quorum = 1.0;           // fraction of online participants to wait for
  std::size_t min_updates = 1;   // updates needed to close at the deadline
  double round_timeout = 60;     // seconds
  double heartbeat_timeout = 3;  // seconds of silence before a device is offline
  // Pace steering and flow control (the coordinator's, not the plan's):
  // heartbeats per second asked of idle devices in all, and updates that
  // may be on their way at once with device selection.
  double max_heartbeat_rate = 500;
  std::size_t upload_slots = 64;

  // The device registry's bounds (see device_registry.h): devices held at
  // most, and seconds offline before a device is forgotten.
  std::size_t max_devices = 10000;
  double forget_offline_after = 600;
};

enum class RunPhase { kWaiting, kTraining, kAggregating, kDone };
const char* ToString(RunPhase phase);

struct ClosedRound {
  RoundRecord record;
  std::vector<float> params;  // the new global model
  // With differential privacy: the accountant including this round, which
  // Commit makes current.
  std::optional<PrivacyAccountant> accountant;
  ServerState state;  // the state committed with it
  // The round's aggregate of the trainable parameters (the sample-weighted
  // mean after norm bounding, for the mean rule) before the server
  // optimiser's step: what a gateway forwards to its root.
  std::vector<float> aggregate;
};

class RoundManager {
 public:
  // state: the ServerState committed with `version` (empty for a new run).
  // Throws fedsgd::Error when it does not fit the plan and the model.
  RoundManager(Plan plan, RoundSettings settings, std::int64_t run_id, std::uint64_t version,
               std::vector<float> params, std::unique_ptr<Aggregator> aggregator,
               ServerState state = {});

  DeviceRegistry& devices() { return devices_; }
  const DeviceRegistry& devices() const { return devices_; }

  // Checks a decoded update against the round state. Accepted: its payload
  // goes into the aggregate and nullopt is returned. Refused: the reason
  // (counted against the device) and nothing else changes.
  std::optional<wire::Reject> OnUpdate(const wire::Update& update, std::size_t bytes, double now);
  // The same for an update whose floats travel beside it (`values`, e.g. a
  // wire::TensorBuffer's view of the received frame; update.payload is then
  // ignored). `values` is read only during the call, after every check of
  // the round state passed, and nothing is copied unless the update is
  // scaled for staleness.
  std::optional<wire::Reject> OnUpdate(const wire::Update& update, std::span<const float> values,
                                       std::size_t bytes, double now);

  bool ShouldOpen() const;
  // Opens round version() + 1 for the devices online now; returns its number.
  std::uint64_t OpenRound(double now, double unix_now);
  bool ShouldClose(double now) const;
  // At a deadline with too few updates: extends it; true means "broadcast the
  // round again" for devices that missed it.
  bool NeedsRebroadcast(double now);
  ClosedRound CloseRound(double unix_now);
  void Commit(ClosedRound&& round);
  // The round could not be committed: forget its updates; the same round
  // number opens again later.
  void Discard();
  // A gateway (docs/protocol.md "Gateways"): the root's model `version`
  // becomes the current one, and a round still open is given up. Throws
  // fedsgd::Error when the size is not the model's.
  void Adopt(std::uint64_t version, std::vector<float> params);

  // Asynchronous mode: the (device, model version) pairs of updates that
  // the newest committed versions applied, from their records, so that a
  // restarted coordinator refuses them again (duplicate). Records older
  // than max_staleness versions are not needed.
  void RestoreApplied(const std::vector<RoundRecord>& recent);

  bool done() const { return version_ >= settings_.rounds; }
  RunPhase phase() const;
  std::uint64_t version() const { return version_; }
  std::uint64_t open_round() const { return open_ ? version_ + 1 : 0; }
  std::size_t accepted() const { return contributions_.size(); }
  std::size_t participants() const { return participants_.size(); }
  // Whether the device takes part in the open round: invited, with device
  // selection; online when it opened, without.
  bool Participates(const std::string& device) const {
    return open_ && participants_.count(device) > 0;
  }
  // Device selection of the open round: {online, invited, target, seed};
  // null without selection or round.
  nlohmann::json selection() const;
  // Synchronous: ceil(quorum x online participants), at least min_updates;
  // with device selection at most N (plan.SelectionTarget).
  // Asynchronous: the buffer size K (plan.async_buffer, or half the devices
  // online when the buffer opened), at least min_updates.
  std::size_t quorum_target() const;
  const std::vector<float>& params() const { return params_; }
  // How many floats an update carries: the parameters after the frozen ones.
  std::size_t trainable() const { return params_.size() - frozen_; }
  // {epsilon, delta, noise_multiplier, clip, rounds} so far; null without
  // differential privacy.
  nlohmann::json privacy() const;
  // Resumes the clip and the accountant from the privacy record of the last
  // committed round. Throws fedsgd::Error when it is not one fedsgd wrote.
  void RestorePrivacy(const nlohmann::json& record_privacy);
  const ServerState& state() const { return state_; }
  const Plan& plan() const { return plan_; }
  const RoundSettings& settings() const { return settings_; }
  std::int64_t run_id() const { return run_id_; }

 private:
  void ForgetOldApplied();

  Plan plan_;
  RoundSettings settings_;
  std::int64_t run_id_;
  std::uint64_t version_;
  std::vector<float> params_;
  std::unique_ptr<Aggregator> aggregator_;
  DpAggregator* dp_ = nullptr;  // aggregator_ itself when DP is on
  PrivacyAccountant accountant_;
  std::vector<double> dp_state_at_open_;  // restored when a round is discarded
  ServerOptimizer optimizer_;
  ServerState state_;
  DeviceRegistry devices_;

  bool open_ = false;
  bool closing_ = false;
  double deadline_ = 0;
  double started_at_ = 0;  // unix
  std::set<std::string> participants_;
  // Device selection of the open round.
  std::size_t online_at_open_ = 0;
  std::size_t selection_target_ = 0;  // N
  std::uint64_t selection_seed_ = 0;
  // (device, model version trained from) of this round's updates, and in
  // async mode of those the last max_staleness versions applied.
  using UpdateKey = std::pair<std::string, std::uint64_t>;
  std::set<UpdateKey> accepted_;
  std::set<UpdateKey> applied_;
  StalenessWeight staleness_weight_;
  std::size_t frozen_;             // Plan::FrozenParameters(): the first ones, never stepped
  std::size_t buffer_target_ = 0;  // async: fixed when the buffer opens
  std::vector<float> scaled_;      // async: a stale update times its weight (reused)
  std::string update_kind_;        // delta | gradient: all updates of a round agree
  std::vector<DeviceContribution> contributions_;
  std::uint64_t rejected_in_round_ = 0;
  std::uint64_t bytes_in_round_ = 0;
};

}  // namespace fedsgd
