// RoundRecord's JSON and the views derived from its devices (see
// checkpoint_store.h); the store that reads and writes records is
// checkpoint_store.cpp.
#include "checkpoint_store.h"

namespace fedsgd {

nlohmann::json RoundRecord::ToJson() const {
  nlohmann::json devs = nlohmann::json::array();
  for (const DeviceContribution& d : devices) {
    devs.push_back({{"device", d.device},
                    {"samples", d.samples},
                    {"loss", d.loss},
                    {"train_seconds", d.train_seconds}});
    if (d.evaluation) {
      devs.back()["eval_loss"] = d.evaluation->loss;
      devs.back()["eval_accuracy"] = d.evaluation->accuracy;
      devs.back()["eval_samples"] = d.evaluation->samples;
      if (d.personal) {
        devs.back()["personal_loss"] = d.personal->loss;
        devs.back()["personal_accuracy"] = d.personal->accuracy;
      }
    }
    if (d.model_version) {
      devs.back()["model_version"] = *d.model_version;
      devs.back()["staleness"] = round - 1 - *d.model_version;
    }
  }
  nlohmann::json j = {{"run_id", run_id},
                      {"round", round},
                      {"devices", devs},
                      {"train_loss", train_loss},
                      {"test_accuracy", nullptr},
                      {"test_loss", nullptr},
                      {"started_at", started_at},
                      {"finished_at", finished_at},
                      {"seconds", finished_at - started_at},
                      {"aggregate_seconds", aggregate_seconds},
                      {"rejected_updates", rejected_updates},
                      {"bytes_in", bytes_in},
                      {"aggregation", aggregation}};
  if (test_accuracy) j["test_accuracy"] = *test_accuracy;
  if (test_loss) j["test_loss"] = *test_loss;
  // The state a restart resumes from is for the coordinator, not the API.
  j["privacy"] = privacy;
  if (privacy.is_object()) j["privacy"].erase("state");
  const std::optional<FederatedEvaluation> f = federated_evaluation();
  j["federated_accuracy"] = f ? nlohmann::json(f->accuracy) : nlohmann::json();
  j["federated_loss"] = f ? nlohmann::json(f->loss) : nlohmann::json();
  j["federated_accuracy_min"] = f ? nlohmann::json(f->min_accuracy) : nlohmann::json();
  j["federated_accuracy_median"] = f ? nlohmann::json(f->median_accuracy) : nlohmann::json();
  j["federated_accuracy_max"] = f ? nlohmann::json(f->max_accuracy) : nlohmann::json();
  j["federated_devices"] = f ? f->devices : 0;
  j["federated_samples"] = f ? f->samples : 0;
  const std::optional<PersonalisationSummary> p = personalisation();
  j["personalisation"] = p ? p->ToJson() : nlohmann::json();
  return j;
}

std::optional<PersonalisationSummary> RoundRecord::personalisation() const {
  PersonalisationSummary p;
  for (const DeviceContribution& d : devices) {
    if (!d.evaluation || !d.personal) continue;
    p.devices += 1;
    p.global_accuracy += d.evaluation->accuracy;
    p.personal_accuracy += d.personal->accuracy;
    p.worse += d.personal->accuracy < d.evaluation->accuracy;
  }
  if (p.devices == 0) return std::nullopt;
  p.global_accuracy /= static_cast<double>(p.devices);
  p.personal_accuracy /= static_cast<double>(p.devices);
  return p;
}

nlohmann::json PersonalisationSummary::ToJson() const {
  return {{"devices", devices},
          {"global_accuracy", global_accuracy},
          {"personal_accuracy", personal_accuracy},
          {"worse", worse},
          {"worse_share", worse_share()}};
}

std::optional<FederatedEvaluation> RoundRecord::federated_evaluation() const {
  std::vector<wire::HeldOutEvaluation> evaluations;
  for (const DeviceContribution& d : devices) {
    if (d.evaluation) evaluations.push_back(*d.evaluation);
  }
  return SummariseFederatedEvaluation(evaluations);
}

}  // namespace fedsgd
