// PrivacyAccountant (see privacy_accountant.h).
#include "privacy_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "fedsgd/error.h"

namespace fedsgd {
namespace {

// Dense where the optimum falls for many rounds (alpha near 1) and for few
// (alpha up to ~30); a few large orders for tiny sampling rates.
std::vector<double> MakeOrders() {
  std::vector<double> orders;
  for (int i = 1; i <= 9; ++i) orders.push_back(1 + i / 10.0);
  for (int i = 0; i <= 32; ++i) orders.push_back(2 + i / 4.0);
  for (int a = 11; a <= 32; ++a) orders.push_back(a);
  for (double a : {40.0, 48.0, 56.0, 64.0, 80.0, 96.0, 128.0, 192.0, 256.0}) orders.push_back(a);
  return orders;
}

// log(exp(a) + exp(b)) without overflow.
double LogAddExp(double a, double b) {
  if (a == -std::numeric_limits<double>::infinity()) return b;
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

}  // namespace

PrivacyAccountant::PrivacyAccountant() : rdp_(Orders().size(), 0.0) {}

const std::vector<double>& PrivacyAccountant::Orders() {
  static const std::vector<double> orders = MakeOrders();
  return orders;
}

double PrivacyAccountant::SampledGaussianRdp(double z, double q, double alpha) {
  if (q == 0) return 0;
  const double gaussian = alpha / (2 * z * z);
  if (q == 1 || alpha != std::floor(alpha)) return gaussian;
  // log A_alpha as a log-sum-exp of its alpha + 1 binomial terms.
  const auto n = static_cast<int>(alpha);
  double log_a = -std::numeric_limits<double>::infinity();
  for (int k = 0; k <= n; ++k) {
    const double kd = k;
    const double log_binomial =
        std::lgamma(alpha + 1) - std::lgamma(kd + 1) - std::lgamma(alpha - kd + 1);
    const double term = log_binomial + kd * std::log(q) + (alpha - kd) * std::log1p(-q) +
                        (kd * kd - kd) / (2 * z * z);
    log_a = LogAddExp(log_a, term);
  }
  // Rounding can push a near-zero value below 0, or past the q = 1 bound.
  return std::clamp(log_a / (alpha - 1), 0.0, gaussian);
}

void PrivacyAccountant::Compose(double z, double q, std::uint64_t rounds) {
  if (!(std::isfinite(z) && z > 0))
    throw Error("privacy accountant: the noise multiplier must be > 0, not " + std::to_string(z));
  if (!(q >= 0 && q <= 1))
    throw Error("privacy accountant: the sampling rate must be in [0, 1], not " +
                std::to_string(q));
  const std::vector<double>& orders = Orders();
  for (std::size_t i = 0; i < orders.size(); ++i)
    rdp_[i] += static_cast<double>(rounds) * SampledGaussianRdp(z, q, orders[i]);
  rounds_ += rounds;
}

std::size_t PrivacyAccountant::Best(double delta) const {
  const std::vector<double>& orders = Orders();
  std::size_t best = 0;
  double best_eps = std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < orders.size(); ++i) {
    const double eps = rdp_[i] + std::log(1 / delta) / (orders[i] - 1);
    if (eps < best_eps) {
      best_eps = eps;
      best = i;
    }
  }
  return best;
}

double PrivacyAccountant::Epsilon(double delta) const {
  if (!(delta > 0 && delta < 1))
    throw Error("privacy accountant: delta must be in (0, 1), not " + std::to_string(delta));
  if (rounds_ == 0) return 0;
  const std::size_t i = Best(delta);
  return rdp_[i] + std::log(1 / delta) / (Orders()[i] - 1);
}

double PrivacyAccountant::BestOrder(double delta) const { return Orders()[Best(delta)]; }

std::vector<double> PrivacyAccountant::ExportState() const {
  std::vector<double> state;
  state.reserve(rdp_.size() + 1);
  state.push_back(static_cast<double>(rounds_));
  state.insert(state.end(), rdp_.begin(), rdp_.end());
  return state;
}

void PrivacyAccountant::ImportState(std::span<const double> state) {
  if (state.size() != rdp_.size() + 1) {
    throw Error("privacy accountant: a saved state has " + std::to_string(state.size()) +
                " values, this fedsgd expects " + std::to_string(rdp_.size() + 1));
  }
  for (double v : state) {
    if (!(std::isfinite(v) && v >= 0))
      throw Error("privacy accountant: a saved state holds " + std::to_string(v));
  }
  if (state[0] != std::floor(state[0]) || state[0] > 9.0e15)
    throw Error("privacy accountant: a saved round count is not a whole number");
  rounds_ = static_cast<std::uint64_t>(state[0]);
  std::copy(state.begin() + 1, state.end(), rdp_.begin());
}

}  // namespace fedsgd
