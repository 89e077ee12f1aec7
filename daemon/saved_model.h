// SavedModel: the newest global model a daemon has received, kept in its
// state directory (--state-dir; systemd's StateDirectory) so that a reboot
// or a lost coordinator leaves the board able to predict
// (`fedsgd-daemon predict`).
//
// Two files: model.npy (the parameters, a float32 .npy file numpy reads)
// and model.json ({"model": architecture text, "model_version", "run_id",
// "parameters"}). Save writes each to a temporary file, fsyncs it, renames
// it over the old one and fsyncs the directory, the .npy first. Each file
// is always whole (old or new, never torn); a crash between the two renames
// leaves the new parameters beside the previous record: the same
// architecture then reads as the newer model labelled with the previous
// version, another architecture (a new run's) is a mismatch that Load
// reports instead of returning it. The next save mends either.
//
// Thread-safety: none; one caller at a time per directory. Failure: Save
// and Load throw fedsgd::Error naming the file; Load returns nullopt when
// the directory holds no saved model yet.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fedsgd {

struct SavedModel {
  std::string model;  // architecture text, e.g. mlp:784-128-10
  std::uint64_t model_version = 0;
  std::string run_id;
  std::vector<float> params;
};

// `name` names the pair: "model" (the newest global model) or "personal"
// (its personalised copy, Plan::personalize_steps).
void SaveModel(const std::string& dir, const SavedModel& saved, const std::string& name = "model");
std::optional<SavedModel> LoadSavedModel(const std::string& dir, const std::string& name = "model");

}  // namespace fedsgd
