// Validators the coordinator's flags share (coordinator_options.cpp,
// plan_options.cpp).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace fedsgd {

// CLI11's PositiveNumber / NonNegativeNumber answer a typo with "Value x not
// in range 2.2e-308 to 1.8e308"; these say what is wrong in words.
inline CLI::Validator SignCheck(bool zero_allowed) {
  return CLI::Validator(
      [zero_allowed](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "'" + text + "' is not a number";
        if (value < 0 || (value == 0 && !zero_allowed)) {
          return std::string("must be ") + (zero_allowed ? ">= 0" : "> 0") + ", not " + text;
        }
        return "";
      },
      zero_allowed ? "NONNEGATIVE" : "POSITIVE");
}
inline const CLI::Validator kPositive = SignCheck(false);
inline const CLI::Validator kNonNegative = SignCheck(true);

}  // namespace fedsgd
