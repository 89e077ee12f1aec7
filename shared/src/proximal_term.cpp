// The FedProx proximal gradient (see proximal_term.h).
#include "fedsgd/proximal_term.h"

namespace fedsgd {

void AddProximalGradient(float* g, const float* w, const float* anchor, std::size_t n, float mu) {
  if (mu == 0.0f) return;
  for (std::size_t i = 0; i < n; ++i) g[i] += mu * (w[i] - anchor[i]);
}

}  // namespace fedsgd
