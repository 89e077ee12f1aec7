// JsonConfig: JSON config files for CLI11 (see json_config.h).
#include "fedsgd/json_config.h"

#include <nlohmann/json.hpp>

namespace fedsgd {

std::string JsonConfig::to_config(const CLI::App* app, bool default_also, bool, std::string) const {
  nlohmann::json j = nlohmann::json::object();
  for (const CLI::Option* opt : app->get_options({})) {
    if (opt->get_lnames().empty() || !opt->get_configurable()) continue;
    const std::string& name = opt->get_lnames()[0];
    if (opt->get_type_size() != 0) {
      if (opt->count() == 1) {
        j[name] = opt->results().at(0);
      } else if (opt->count() > 1) {
        j[name] = opt->results();
      } else if (default_also && !opt->get_default_str().empty()) {
        j[name] = opt->get_default_str();
      }
    } else if (opt->count() > 0) {
      j[name] = true;
    }
  }
  return j.dump(2) + "\n";
}

std::vector<CLI::ConfigItem> JsonConfig::from_config(std::istream& input) const {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(input);
  } catch (const nlohmann::json::exception& e) {
    throw CLI::ConversionError(std::string("the config file is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) {
    throw CLI::ConversionError("the config file must hold one JSON object of flag: value");
  }
  std::vector<CLI::ConfigItem> result;
  for (auto it = j.begin(); it != j.end(); ++it) {
    CLI::ConfigItem item;
    item.name = it.key();
    const nlohmann::json& v = it.value();
    auto scalar = [&](const nlohmann::json& x) -> std::string {
      if (x.is_string()) return x.get<std::string>();
      if (x.is_boolean()) return x.get<bool>() ? "true" : "false";
      if (x.is_number()) return x.dump();
      throw CLI::ConversionError("config key '" + it.key() +
                                 "' must be a string, number, boolean or array of them");
    };
    if (v.is_array()) {
      for (const auto& x : v) item.inputs.push_back(scalar(x));
    } else {
      item.inputs.push_back(scalar(v));
    }
    result.push_back(std::move(item));
  }
  return result;
}

CLI::Option* AddJsonConfig(CLI::App& app) {
  app.config_formatter(std::make_shared<JsonConfig>());
  app.allow_config_extras(CLI::config_extras_mode::error);
  return app.set_config("--config", "",
                        "JSON config file: {\"flag-name\": value, ...}; flags "
                        "given on the command line win");
}

}  // namespace fedsgd
