// fedsgd::Error: the one exception type for bad input a person can fix.
//
// Loaders, parsers and configuration code throw Error when a file, a flag or
// a config value is wrong. what() is a complete sentence for a person: it
// names the file (and line and column where there is one) and what was
// expected. Programs catch Error at the top, print it and exit non-zero.
// Bugs (broken invariants) are not Errors; they use assertions.
#pragma once

#include <stdexcept>

namespace fedsgd {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fedsgd
