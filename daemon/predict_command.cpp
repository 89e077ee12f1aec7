// `fedsgd-daemon predict` (see predict_command.h).
#include "predict_command.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <sstream>
#include <thread>

#include "fedsgd/dataset.h"
#include "fedsgd/error.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "fedsgd/npy.h"
#include "inference_protocol.h"
#include "saved_model.h"

namespace fedsgd {
namespace {

SavedModel LoadModel(const PredictCommandOptions& o) {
  if (!o.model_file.empty()) {
    if (o.model.empty()) throw Error("--model-file needs --model (its architecture)");
    std::ifstream in(o.model_file, std::ios::binary);
    if (!in) throw Error("cannot read --model-file " + o.model_file);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    SavedModel m;
    m.model = Architecture::Parse(o.model).ToString();
    m.params = DecodeNpy(bytes.str(), o.model_file);
    const std::size_t expected = Architecture::Parse(m.model).ParameterCount();
    if (m.params.size() != expected) {
      throw Error(o.model_file + " holds " + std::to_string(m.params.size()) +
                  " parameters, model " + m.model + " has " + std::to_string(expected));
    }
    return m;
  }
  if (o.state_dir.empty()) {
    throw Error("no model: give --state-dir (the daemon's) or --model-file with --model");
  }
  std::optional<SavedModel> saved = LoadSavedModel(o.state_dir, o.personal ? "personal" : "model");
  if (!saved && o.personal) {
    throw Error(o.state_dir +
                " holds no personalised model: the daemon saves one after each round of a plan "
                "with --personalize-steps");
  }
  if (!saved) {
    throw Error(o.state_dir +
                " holds no saved model yet: the daemon saves one when it receives a model from "
                "its coordinator (--state-dir)");
  }
  return std::move(*saved);
}

Dataset LoadInput(const PredictCommandOptions& o, const Architecture& arch) {
  CsvOptions csv;
  csv.label_column = o.label_column;
  csv.header = o.csv_header;
  csv.classification = false;  // labels are ignored: any number will do
  const std::string path = o.data == "-" ? "/dev/stdin" : o.data;
  const bool is_csv = o.data == "-" || (!std::filesystem::is_directory(path) &&
                                        path.find("images-idx3") == std::string::npos);
  Dataset data = is_csv ? LoadCsv(path, csv) : LoadDataset(path, Split::kTest, csv);
  if (is_csv && o.label_column < 0 && data.num_features + 1 == arch.input_size()) {
    // No label column: the "labels" read from the last column are the last input.
    Dataset unlabelled;
    unlabelled.num_features = arch.input_size();
    unlabelled.x.reserve(data.size() * static_cast<std::size_t>(arch.input_size()));
    for (std::size_t i = 0; i < data.size(); ++i) {
      unlabelled.x.insert(unlabelled.x.end(), data.sample(i), data.sample(i) + data.num_features);
      unlabelled.x.push_back(data.y[i]);
    }
    unlabelled.y.assign(data.size(), 0.0f);
    data = std::move(unlabelled);
  }
  if (data.num_features != arch.input_size()) {
    throw Error(o.data + ": " + std::to_string(data.num_features) + " features, model " +
                arch.ToString() + " expects " + std::to_string(arch.input_size()));
  }
  return data;
}

void Print(std::ostream& out, const std::string& format, const Architecture& arch,
           std::size_t index, const float* outputs) {
  const int k = arch.output_size();
  const bool classifier = arch.num_classes() > 0;
  char number[32];
  if (format == "csv") {
    out << index;
    if (classifier) {
      int best = 0;
      if (k > 1) {
        for (int c = 1; c < k; ++c) best = outputs[c] > outputs[best] ? c : best;
      } else {
        best = outputs[0] >= 0.5f;
      }
      out << ',' << best;
    }
    for (int c = 0; c < k; ++c) {
      std::snprintf(number, sizeof number, ",%.6g", outputs[c]);
      out << number;
    }
    out << '\n';
    return;
  }
  nlohmann::json line = {{"index", index}};
  line.update(PredictionJson(arch, outputs));
  out << line.dump() << '\n';
}

}  // namespace

CLI::App* AddPredictCommand(CLI::App& app, PredictCommandOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "predict",
      "Classify (or predict) each sample of a data set with the newest model this daemon saved "
      "in --state-dir, or with --model-file; one line per sample on stdout");
  cmd->add_option("--data", o.data,
                  "IDX directory (its t10k-* files) or images file, CSV file, or - for CSV on "
                  "stdin")
      ->required();
  cmd->add_option("--state-dir", o.state_dir,
                  "The daemon's state directory (its --state-dir), holding model.npy and "
                  "model.json")
      ->envname("STATE_DIRECTORY");
  cmd->add_flag("--personal", o.personal,
                "Use the personalised copy (personal.npy, kept with a plan's --personalize-steps) "
                "instead of the global model");
  cmd->add_option("--model-file", o.model_file,
                  "A .npy model instead (e.g. from the coordinator's /v1/model?format=npy)");
  cmd->add_option("--model", o.model, "With --model-file: its architecture, e.g. mlp:784-128-10");
  cmd->add_option("--format", o.format, "Output lines: json or csv")
      ->capture_default_str()
      ->check(CLI::IsMember({"json", "csv"}));
  cmd->add_option("--threads", o.threads, "Threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_option("--label-column", o.label_column, "CSV: 0-based label column (-1: last)")
      ->capture_default_str();
  cmd->add_flag("--csv-header", o.csv_header, "CSV: the first line is a header");
  return cmd;
}

void RunPredictCommand(const PredictCommandOptions& o, std::ostream& out, std::ostream& log) {
  const SavedModel model = LoadModel(o);
  const Architecture arch = Architecture::Parse(model.model);
  const Dataset data = LoadInput(o, arch);
  const std::size_t n = data.size();
  const int k = arch.output_size();
  const auto start = std::chrono::steady_clock::now();
  // Batches in order, `threads` at a time, printed in order.
  const int threads = std::max(1, o.threads);
  const int batch = InferenceBatch(arch);  // 64 for a cnn: its Workspace is large
  std::vector<Workspace> spaces;
  for (int t = 0; t < threads; ++t) spaces.emplace_back(arch, batch);
  std::vector<float> outputs(static_cast<std::size_t>(threads) * batch * k);
  // Per thread: the batch's rows, features as floats (IDX bytes convert
  // here, a batch at a time) and its (unused) targets.
  const std::size_t features = static_cast<std::size_t>(data.num_features);
  std::vector<std::vector<std::size_t>> rows(threads, std::vector<std::size_t>(batch));
  std::vector<std::vector<float>> xs(threads, std::vector<float>(batch * features));
  std::vector<std::vector<float>> ys(threads, std::vector<float>(batch));
  for (std::size_t begin = 0; begin < n; begin += static_cast<std::size_t>(threads) * batch) {
    auto work = [&](int t) {
      const std::size_t from = begin + static_cast<std::size_t>(t) * batch;
      if (from >= n) return;
      const std::size_t count = std::min<std::size_t>(batch, n - from);
      for (std::size_t r = 0; r < count; ++r) rows[t][r] = from + r;
      data.Gather(std::span(rows[t]).first(count), xs[t].data(), ys[t].data());
      Predict(arch, model.params.data(), xs[t].data(), static_cast<int>(count),
              outputs.data() + static_cast<std::size_t>(t) * batch * k, spaces[t]);
    };
    {
      std::vector<std::jthread> pool;
      for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
      work(0);
    }
    const std::size_t end = std::min(n, begin + static_cast<std::size_t>(threads) * batch);
    for (std::size_t i = begin; i < end; ++i) {
      Print(out, o.format, arch, i, outputs.data() + (i - begin) * k);
    }
  }
  out.flush();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char line[256];
  std::snprintf(line, sizeof line,
                "fedsgd-daemon predict: %zu samples with model %s%s in %.3f s (%.0f samples/s, "
                "output included)\n",
                n, arch.ToString().c_str(),
                model.run_id.empty() ? ""
                                     : (" (run " + model.run_id + ", version " +
                                        std::to_string(model.model_version) + ")")
                                           .c_str(),
                seconds, seconds > 0 ? static_cast<double>(n) / seconds : 0.0);
  log << line;
}

}  // namespace fedsgd
