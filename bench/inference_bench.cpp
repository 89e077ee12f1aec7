// fedsgd_inference_bench: predictions per second of the daemon's inference
// endpoint (--inference-socket, docs/inference.md) against the forward pass
// alone.
//
//   fedsgd_inference_bench [--model mlp:784-128-10] [--samples 10000]
//                          [--socket PATH]
//
// Prints, for Fashion-MNIST test images as CSV rows:
//   in-process   Predict() in the endpoint's batches (no text), and with the
//                protocol's parsing and JSON answers added (no socket);
//   endpoint     an InferenceServer in this process on a Unix socket: every
//                sample written on one connection and read back (pipelined),
//                then one request at a time (send a line, wait for its
//                answer);
//   --socket     the same two client measurements against a running daemon's
//                socket (e.g. while it trains), instead of a server here.
// One client thread; the server has one thread of its own. The model's
// weights are a fresh initialisation: speed does not depend on them.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "../tests/integration/unix_line_client.h"
#include "fedsgd/dataset.h"
#include "fedsgd/model.h"
#include "fedsgd/network.h"
#include "inference_protocol.h"
#include "inference_server.h"
#include "model_slot.h"

namespace {

using namespace fedsgd;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Report(const char* what, std::size_t n, double seconds) {
  std::printf("  %-58s %9.0f predictions/s  (%zu in %.3f s)\n", what,
              static_cast<double>(n) / seconds, n, seconds);
}

// Every row written on one connection while a second thread reads the answers.
void Pipelined(const std::string& socket, const std::string& rows, std::size_t n,
               const char* what) {
  testing::UnixLineClient c(socket);
  if (!c.connected()) {
    std::printf("  cannot connect to %s\n", socket.c_str());
    return;
  }
  const auto start = Clock::now();
  std::jthread writer([&] { c.Send(rows); });
  std::size_t answered = 0;
  for (std::size_t i = 0; i < n; ++i) answered += c.Line().find("\"class\"") != std::string::npos;
  const double seconds = Since(start);
  if (answered != n) std::printf("  only %zu of %zu answered with a class\n", answered, n);
  Report(what, n, seconds);
}

// One request at a time: the round trip per prediction.
void OneAtATime(const std::string& socket, const std::vector<std::string>& lines,
                const char* what) {
  testing::UnixLineClient c(socket);
  if (!c.connected()) return;
  const auto start = Clock::now();
  for (const std::string& line : lines) {
    c.Send(line);
    c.Line();
  }
  const double seconds = Since(start);
  Report(what, lines.size(), seconds);
  std::printf("  %-58s %9.1f us\n", "  round trip per request",
              seconds / static_cast<double>(lines.size()) * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedsgd_inference_bench: predictions per second of the daemon's inference endpoint"};
  std::string model_text = "mlp:784-128-10", socket, data_dir = "/usr/share/datasets/fashion-mnist";
  std::size_t samples = 10000;
  app.add_option("--model", model_text, "Architecture")->capture_default_str();
  app.add_option("--samples", samples, "Test images to send")->capture_default_str();
  app.add_option("--data", data_dir, "Fashion-MNIST directory")->capture_default_str();
  app.add_option("--socket", socket,
                 "A running daemon's --inference-socket instead of a server here");
  CLI11_PARSE(app, argc, argv);

  const Dataset test = LoadDataset(data_dir, Split::kTest);
  samples = std::min(samples, test.size());
  const Model model = Model::Create(Architecture::Parse(model_text), 1);
  const int inputs = model.arch.input_size();
  std::vector<std::size_t> order(samples);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> x(samples * inputs), y(samples);
  test.Gather(order, x.data(), y.data());
  std::string rows;
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < samples; ++i) {
    std::string row;
    char number[32];
    for (int f = 0; f < inputs; ++f) {
      std::snprintf(number, sizeof number, f ? ",%.6g" : "%.6g", x[i * inputs + f]);
      row += number;
    }
    row += '\n';
    rows += row;
    if (lines.size() < 2000) lines.push_back(row);
  }
  std::printf(
      "fedsgd_inference_bench: model %s, %zu Fashion-MNIST test images (%.1f MB of CSV), "
      "%u hardware threads\n",
      model.arch.ToString().c_str(), samples, static_cast<double>(rows.size()) / 1e6,
      std::thread::hardware_concurrency());

  if (!socket.empty()) {
    std::printf("daemon at %s:\n", socket.c_str());
    Pipelined(socket, rows, samples, "endpoint, pipelined (one connection)");
    OneAtATime(socket, lines, "endpoint, one request at a time");
    return 0;
  }

  const InferenceServerLimits limits;
  const int batch = std::min(limits.max_batch, InferenceBatch(model.arch));
  const int k = model.arch.output_size();
  {
    std::printf("in-process (one thread):\n");
    Workspace ws(model.arch, batch);
    std::vector<float> out(static_cast<std::size_t>(batch) * k);
    auto start = Clock::now();
    for (std::size_t i = 0; i < samples; i += batch) {
      const int n = static_cast<int>(std::min<std::size_t>(batch, samples - i));
      Predict(model.arch, model.params.data(), x.data() + i * inputs, n, out.data(), ws);
    }
    Report(("Predict(), batches of " + std::to_string(batch)).c_str(), samples, Since(start));
    ServedModel served{model.arch, ShareParams(model.params), "1", 1, "coordinator"};
    std::vector<float> parsed(static_cast<std::size_t>(batch) * inputs);
    std::size_t bytes = 0;
    start = Clock::now();
    for (std::size_t i = 0, pos = 0; i < samples; i += batch) {
      const int n = static_cast<int>(std::min<std::size_t>(batch, samples - i));
      for (int j = 0; j < n; ++j) {
        const std::size_t newline = rows.find('\n', pos);
        ParseSample(std::string_view(rows).substr(pos, newline - pos), inputs,
                    parsed.data() + static_cast<std::size_t>(j) * inputs);
        pos = newline + 1;
      }
      Predict(model.arch, model.params.data(), parsed.data(), n, out.data(), ws);
      for (int j = 0; j < n; ++j) bytes += SampleAnswer(i + j, served, out.data() + j * k).size();
    }
    Report("parse CSV + Predict() + JSON answers (no socket)", samples, Since(start));
    std::printf("  %-58s %9.1f MB\n", "  answers", static_cast<double>(bytes) / 1e6);
  }
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("fedsgd_bench_" + std::to_string(::getpid()) + ".sock"))
                               .string();
  ModelSlot slot;
  slot.Publish(std::make_shared<ServedModel>(
      ServedModel{model.arch, ShareParams(model.params), "1", 1, "coordinator"}));
  InferenceServer server(path, slot);
  std::printf("endpoint (InferenceServer on a Unix socket, its own thread):\n");
  Pipelined(path, rows, samples, "pipelined (one connection)");
  OneAtATime(path, lines, "one request at a time");
  return 0;
}
