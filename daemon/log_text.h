// Two small helpers of the daemon's log lines and messages (DeviceClient,
// in device_client.cpp and device_client_training.cpp).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>

namespace fedsgd {

// printf of up to three numbers into a log line.
inline std::string Format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

// A figure fit to send: the protocol refuses NaN and Inf, 0 stands in.
inline double Finite(double x) { return std::isfinite(x) ? x : 0.0; }

}  // namespace fedsgd
