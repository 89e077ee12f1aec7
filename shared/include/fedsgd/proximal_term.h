// The FedProx proximal term (Li et al. 2020, "Federated Optimization in
// Heterogeneous Networks", MLSys): local training on a device minimises
//   loss(w) + mu/2 * ||w - w_global||^2
// so each step's gradient gains mu * (w - w_global). It keeps a device's
// model near the global one when its data differ from everyone else's.
//
// AddProximalGradient is a plain loop over memory the caller owns (a
// thread's private gradient and weight snapshot in hogwild, a thread's own
// slice in sync mode): no allocation, no shared writes, reentrant.
#pragma once

#include <cstddef>

namespace fedsgd {

// g[i] += mu * (w[i] - anchor[i]) for i < n. Nothing happens for mu == 0.
void AddProximalGradient(float* g, const float* w, const float* anchor, std::size_t n, float mu);

}  // namespace fedsgd
