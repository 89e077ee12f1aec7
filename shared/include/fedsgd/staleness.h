// Staleness weighting for asynchronous aggregation (Plan::mode "async").
//
// In an asynchronous run an update is trained from model version b and
// arrives when the coordinator is at version v >= b; its staleness is
// s = v - b. The coordinator multiplies the update's weight (its sample
// count) by w(s) before it enters the buffer, so old updates count less:
//
//   constant        w(s) = 1
//   polynomial:A    w(s) = (1 + s)^-A, A >= 0 (FedBuff's default is
//                   A = 0.5: Nguyen et al. 2022, "Federated Learning with
//                   Buffered Asynchronous Aggregation", AISTATS; FedAsync,
//                   Xie et al. 2019, "Asynchronous Federated Optimization")
//   hinge:A:B       w(s) = 1 for s <= B, else 1 / (A (s - B) + 1), A >= 0,
//                   B >= 0 (FedAsync's hinge function, Xie et al. 2019)
//
// w(0) = 1 for every kind, and w never increases with s. Parse throws
// fedsgd::Error naming --staleness-weight and the text. Reentrant.
#pragma once

#include <cstdint>
#include <string>

namespace fedsgd {

struct StalenessWeight {
  enum class Kind { kConstant, kPolynomial, kHinge };
  Kind kind = Kind::kPolynomial;
  double a = 0.5;
  double b = 0;  // hinge only

  static StalenessWeight Parse(const std::string& text);
  // The text Parse reads back.
  std::string ToString() const;
  double operator()(std::uint64_t staleness) const;
};

}  // namespace fedsgd
