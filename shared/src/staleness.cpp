// Staleness weighting (see fedsgd/staleness.h).
#include "fedsgd/staleness.h"

#include <charconv>
#include <cmath>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// A finite number >= 0 spanning the whole text, or nullopt-like false.
bool ParseNonNegative(const std::string& text, double& value) {
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, value);
  return !text.empty() && r.ec == std::errc() && r.ptr == end && std::isfinite(value) && value >= 0;
}

std::string Shortest(double v) {
  char text[32];
  const auto r = std::to_chars(text, text + sizeof text, v);
  return std::string(text, r.ptr);
}

}  // namespace

StalenessWeight StalenessWeight::Parse(const std::string& text) {
  const auto bad = [&] {
    return Error("--staleness-weight '" + text +
                 "' must be constant, polynomial:A (A >= 0) or hinge:A:B (A, B >= 0)");
  };
  StalenessWeight w;
  if (text == "constant") {
    w.kind = Kind::kConstant;
    w.a = 0;
    return w;
  }
  const std::size_t colon = text.find(':');
  if (colon == std::string::npos) throw bad();
  const std::string kind = text.substr(0, colon);
  const std::string rest = text.substr(colon + 1);
  if (kind == "polynomial") {
    if (!ParseNonNegative(rest, w.a)) throw bad();
    w.kind = Kind::kPolynomial;
    return w;
  }
  if (kind == "hinge") {
    const std::size_t second = rest.find(':');
    if (second == std::string::npos || !ParseNonNegative(rest.substr(0, second), w.a) ||
        !ParseNonNegative(rest.substr(second + 1), w.b))
      throw bad();
    w.kind = Kind::kHinge;
    return w;
  }
  throw bad();
}

std::string StalenessWeight::ToString() const {
  switch (kind) {
    case Kind::kConstant:
      return "constant";
    case Kind::kPolynomial:
      return "polynomial:" + Shortest(a);
    case Kind::kHinge:
      return "hinge:" + Shortest(a) + ":" + Shortest(b);
  }
  return "?";
}

double StalenessWeight::operator()(std::uint64_t staleness) const {
  const double s = static_cast<double>(staleness);
  switch (kind) {
    case Kind::kConstant:
      return 1;
    case Kind::kPolynomial:
      return std::pow(1 + s, -a);
    case Kind::kHinge:
      return s <= b ? 1 : 1 / (a * (s - b) + 1);
  }
  return 1;
}

}  // namespace fedsgd
