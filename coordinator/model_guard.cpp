// FindNonFinite (see model_guard.h).
#include "model_guard.h"

#include <bit>
#include <cmath>
#include <cstdint>

namespace fedsgd {

std::optional<std::string> FindNonFinite(std::span<const float> params) {
  // The exponent bits all set mean Inf or NaN; a branch-free scan vectorises.
  std::size_t bad = 0;
  for (const float v : params)
    bad += (std::bit_cast<std::uint32_t>(v) & 0x7f800000u) == 0x7f800000u;
  if (bad == 0) return std::nullopt;
  std::size_t first = 0;
  while (std::isfinite(params[first])) ++first;
  return std::to_string(bad) + " of " + std::to_string(params.size()) +
         " parameters are not finite, the first at index " + std::to_string(first) + ": " +
         std::to_string(params[first]);
}

}  // namespace fedsgd
