// Times as the coordinator records and reports them: unix seconds for the
// database and the API, seconds since a steady-clock instant for durations.
#pragma once

#include <chrono>

namespace fedsgd {

inline double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace fedsgd
