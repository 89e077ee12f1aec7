// Simulated attackers (see simulated_attack.h).
#include "simulated_attack.h"

#include <charconv>
#include <cmath>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

[[noreturn]] void Bad(std::string_view text, const std::string& why) {
  throw Error("--simulate-attack '" + std::string(text) + "': " + why +
              " (expected none, sign-flip, scale:K, gaussian:SIGMA or label-flip)");
}

double Number(std::string_view full, std::string_view s) {
  double v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
    Bad(full, "'" + std::string(s) + "' is not a number");
  }
  return v;
}

std::string Shortest(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

}  // namespace

SimulatedAttack SimulatedAttack::Parse(std::string_view text) {
  SimulatedAttack a;
  if (text == "none") return a;
  if (text == "sign-flip") {
    a.kind = Kind::kSignFlip;
  } else if (text == "label-flip") {
    a.kind = Kind::kLabelFlip;
  } else if (text.starts_with("scale:")) {
    a.kind = Kind::kScale;
    a.value = Number(text, text.substr(6));
    // Beyond 1e6 a float update overflows to Inf and is refused as non-finite.
    if (std::abs(a.value) > 1e6) Bad(text, "K must be within [-1e6, 1e6]");
  } else if (text.starts_with("gaussian:")) {
    a.kind = Kind::kGaussian;
    a.value = Number(text, text.substr(9));
    if (!(a.value > 0) || a.value > 1e6) Bad(text, "SIGMA must be in (0, 1e6]");
  } else {
    Bad(text, "unknown attack");
  }
  return a;
}

std::string SimulatedAttack::ToString() const {
  switch (kind) {
    case Kind::kNone:
      return "none";
    case Kind::kSignFlip:
      return "sign-flip";
    case Kind::kScale:
      return "scale:" + Shortest(value);
    case Kind::kGaussian:
      return "gaussian:" + Shortest(value);
    case Kind::kLabelFlip:
      return "label-flip";
  }
  return "none";
}

void SimulatedAttack::Apply(std::vector<float>& update, std::mt19937_64& rng) const {
  switch (kind) {
    case Kind::kSignFlip:
      for (float& v : update) v = -v;
      break;
    case Kind::kScale: {
      const auto k = static_cast<float>(value);
      for (float& v : update) v *= k;
      break;
    }
    case Kind::kGaussian: {
      std::normal_distribution<float> noise(0.0f, static_cast<float>(value));
      for (float& v : update) v = noise(rng);
      break;
    }
    case Kind::kNone:
    case Kind::kLabelFlip:
      break;
  }
}

void SimulatedAttack::FlipLabels(Dataset& data, int classes) const {
  if (kind != Kind::kLabelFlip) return;
  if (data.num_classes == 0 || classes < 2) {
    throw Error(
        "--simulate-attack label-flip needs classification data and a model with at "
        "least 2 classes");
  }
  const auto top = static_cast<float>(classes - 1);
  for (float& y : data.y) y = top - y;
}

}  // namespace fedsgd
