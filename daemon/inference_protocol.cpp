// The daemon's inference protocol (see inference_protocol.h).
#include "inference_protocol.h"

#include <charconv>
#include <cmath>
#include <vector>

namespace fedsgd {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool IsLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// At most this much of a bad value goes into an error message.
std::string Excerpt(std::string_view value) {
  constexpr std::size_t kMax = 24;
  return value.size() <= kMax ? std::string(value) : std::string(value.substr(0, kMax)) + "...";
}

}  // namespace

RequestKind ClassifyRequest(std::string_view line) {
  line = Trim(line);
  if (line.empty()) return RequestKind::kBlank;
  for (char c : line) {
    if (!IsLetter(c)) return RequestKind::kSample;
  }
  return line == "model" ? RequestKind::kModel : RequestKind::kUnknownCommand;
}

std::optional<std::string> ParseSample(std::string_view line, int inputs, float* x) {
  line = Trim(line);
  int count = 0;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = line.find(',', begin);
    const std::string_view field =
        Trim(line.substr(begin, comma == std::string_view::npos ? line.npos : comma - begin));
    if (count < inputs) {
      std::string_view digits = field;
      if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
      float value = 0;
      const auto [end, error] =
          std::from_chars(digits.data(), digits.data() + digits.size(), value);
      if (digits.empty() || error == std::errc::invalid_argument ||
          end != digits.data() + digits.size()) {
        return "value " + std::to_string(count) + " ('" + Excerpt(field) + "') is not a number";
      }
      if (error == std::errc::result_out_of_range || !std::isfinite(value)) {
        return "value " + std::to_string(count) + " ('" + Excerpt(field) +
               "') is not finite or out of float32 range";
      }
      x[count] = value;
    }
    ++count;
    if (comma == std::string_view::npos) break;
    begin = comma + 1;
  }
  if (count != inputs) {
    return "the row has " + std::to_string(count) + " values, the model takes " +
           std::to_string(inputs);
  }
  return std::nullopt;
}

nlohmann::json PredictionJson(const Architecture& arch, const float* outputs) {
  const int k = arch.output_size();
  nlohmann::json j = nlohmann::json::object();
  if (arch.num_classes() == 0) {
    j["prediction"] = outputs[0];
  } else if (k == 1) {  // logistic: P(y = 1)
    j["class"] = outputs[0] >= 0.5f ? 1 : 0;
    j["probabilities"] = {1.0f - outputs[0], outputs[0]};
  } else {
    int best = 0;
    for (int c = 1; c < k; ++c) best = outputs[c] > outputs[best] ? c : best;
    j["class"] = best;
    j["probabilities"] = std::vector<float>(outputs, outputs + k);
  }
  return j;
}

std::string SampleAnswer(std::uint64_t index, const ServedModel& model, const float* outputs) {
  nlohmann::json j = {{"index", index}};
  j.update(PredictionJson(model.arch, outputs));
  j["model_version"] = model.model_version;
  return j.dump() + '\n';
}

std::string ModelAnswer(std::uint64_t index, const ServedModel& model) {
  const nlohmann::json j = {{"index", index},
                            {"model", model.arch.ToString()},
                            {"run_id", model.run_id},
                            {"model_version", model.model_version},
                            {"source", model.source},
                            {"inputs", model.arch.input_size()},
                            {"outputs", model.arch.output_size()},
                            {"classes", model.arch.num_classes()}};
  return j.dump() + '\n';
}

std::string ErrorAnswer(std::uint64_t index, int status, std::string_view message) {
  const nlohmann::json j = {{"index", index}, {"status", status}, {"error", message}};
  // Replace, never throw, on bytes that are not UTF-8 (an echoed bad value).
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + '\n';
}

}  // namespace fedsgd
