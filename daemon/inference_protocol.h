// The daemon's inference protocol (docs/inference.md): what one request
// line means and what each answer line says. Pure functions over strings, so
// they are tested without a socket; InferenceServer (inference_server.h)
// does the I/O.
//
// A request is one line (the '\n' not included; a trailing '\r' is
// ignored). Blank lines are ignored. A line of letters only is a command
// ("model"); anything else is a sample: the model's inputs as comma-separated
// decimal numbers. Every answer is one JSON object on one line:
//   sample   {"index", "class", "probabilities", "model_version"} (classifiers;
//            the same fields as `fedsgd-daemon predict --format json`) or
//            {"index", "prediction", "model_version"} (regression)
//   model    {"index", "model", "run_id", "model_version", "source",
//            "inputs", "outputs", "classes"}
//   error    {"index", "status", "error"}: 400 malformed request, 413 line
//            too long, 503 no model yet (or too many connections)
// index counts the non-blank request lines of a connection from 0.
//
// Thread-safety: none needed; the functions keep no state.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "fedsgd/model.h"
#include "model_slot.h"

namespace fedsgd {

enum class RequestKind { kBlank, kSample, kModel, kUnknownCommand };

// What kind of request a line is (no parsing of numbers yet).
RequestKind ClassifyRequest(std::string_view line);

// Parses a sample line into exactly `inputs` floats at x. Returns nullopt on
// success, else what is wrong (for a 400 answer): the wrong number of
// values, a value that is not a number, or one that is not finite in
// float32 (nan, inf, 1e39).
std::optional<std::string> ParseSample(std::string_view line, int inputs, float* x);

// The prediction fields for one sample's model outputs (Predict's
// output_size() floats): {"class", "probabilities"} for classifiers
// (logistic: [1 - p, p]), {"prediction"} for regression. Shared with
// `fedsgd-daemon predict`.
nlohmann::json PredictionJson(const Architecture& arch, const float* outputs);

// Answer lines, each ending in '\n'.
std::string SampleAnswer(std::uint64_t index, const ServedModel& model, const float* outputs);
std::string ModelAnswer(std::uint64_t index, const ServedModel& model);
std::string ErrorAnswer(std::uint64_t index, int status, std::string_view message);

}  // namespace fedsgd
