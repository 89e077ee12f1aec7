// DeviceClient: handing the newest model to the inference endpoint (see
// device_client.h and inference_server.h).
#include "device_client.h"
#include "fedsgd/error.h"
#include "saved_model.h"

namespace fedsgd {

void DeviceClient::StartInference() {
  if (options_.inference_socket.empty()) return;
  if (!options_.state_dir.empty()) {
    try {
      // --inference-model personal: the personalised copy saved before this
      // start, if there is one, else the global model.
      std::optional<SavedModel> saved;
      const bool personal = options_.inference_model == "personal";
      if (personal) saved = LoadSavedModel(options_.state_dir, "personal");
      const char* source = saved ? "state-dir personal" : "state-dir";
      if (!saved) saved = LoadSavedModel(options_.state_dir);
      if (saved) {
        auto model = std::make_shared<ServedModel>();
        model->arch = Architecture::Parse(saved->model);
        if (model->arch.ParameterCount() != saved->params.size()) {
          throw Error("model.npy does not fit " + saved->model);
        }
        model->params = ShareParams(std::move(saved->params));
        model->run_id = saved->run_id;
        model->model_version = saved->model_version;
        model->source = source;
        served_.Publish(std::move(model));
      }
    } catch (const Error& e) {
      Warn("inference_saved_model",
           std::string("inference: not serving the saved model: ") + e.what());
    }
  }
  inference_ = std::make_unique<InferenceServer>(options_.inference_socket, served_);
  const std::shared_ptr<const ServedModel> current = served_.Current();
  Log("inference: answering on " + options_.inference_socket +
      (current ? " with the saved model (run " + current->run_id + ", version " +
                     std::to_string(current->model_version) + ") until one arrives"
               : " (no model yet: 503 until one arrives)"));
}

void DeviceClient::PublishNewestModel() {
  if (!inference_ || !plan_ || !params_ || params_->size() != parameter_count_) return;
  // A personalised copy of this run's model is served instead (it comes
  // with the next update; SavePersonalModel hands it over).
  if (options_.inference_model == "personal" && served_personal_run_ == run_id_) return;
  if (run_id_ == served_run_id_ && model_version_ == served_version_) return;
  auto model = std::make_shared<ServedModel>();
  model->arch = plan_->architecture();
  model->params = params_;  // shared, not copied
  model->run_id = run_id_;
  model->model_version = model_version_;
  model->source = "coordinator";
  served_.Publish(std::move(model));
  served_run_id_ = run_id_;
  served_version_ = model_version_;
}

}  // namespace fedsgd
