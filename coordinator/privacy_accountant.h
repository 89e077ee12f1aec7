// PrivacyAccountant: the (epsilon, delta) a run of DP-FedAvg has spent, by
// Renyi differential privacy (RDP).
//
// Each round releases a sum of clipped updates plus Gaussian noise of
// standard deviation z x C (noise multiplier z, clip C), from devices taking
// part with probability q. Its RDP at order alpha (Mironov 2017, "Renyi
// Differential Privacy", Prop. 7 for q = 1; Mironov, Talwar and Zhang 2019,
// "Renyi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3,
// for q < 1) is
//   q = 1:  alpha / (2 z^2)
//   q < 1:  log( sum_{k=0..alpha} C(alpha,k) (1-q)^(alpha-k) q^k
//                exp((k^2 - k) / (2 z^2)) ) / (alpha - 1),  alpha integer.
// Only integer orders use the sampled bound; the fractional orders of the
// grid keep the q = 1 value there, which is still an upper bound (subsampling
// never costs privacy: Renyi divergence is jointly quasi-convex). RDP adds up
// over rounds (Mironov 2017, Prop. 1); the guarantee after T rounds is
//   epsilon = min over alpha of  RDP(alpha) + log(1/delta) / (alpha - 1)
// (Mironov 2017, Prop. 3) on a fixed grid of 73 orders from 1.1 to 256.
//
// Not thread-safe: the round thread owns it. Memory: one double per order
// (73). Compose() refuses (fedsgd::Error) a noise multiplier <= 0 or q
// outside [0, 1]; ImportState refuses a state of the wrong length or with a
// negative or non-finite value.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fedsgd {

class PrivacyAccountant {
 public:
  PrivacyAccountant();

  // The orders alpha the accountant tracks, ascending.
  static const std::vector<double>& Orders();
  // RDP of one sampled Gaussian release at order alpha (> 1).
  static double SampledGaussianRdp(double noise_multiplier, double sampling_rate, double alpha);

  // Accounts `rounds` releases with this noise multiplier and sampling rate.
  void Compose(double noise_multiplier, double sampling_rate, std::uint64_t rounds = 1);
  // The smallest epsilon over the orders at this delta (0 < delta < 1); 0
  // before any round.
  double Epsilon(double delta) const;
  // The order that gives Epsilon(delta).
  double BestOrder(double delta) const;
  std::uint64_t rounds() const { return rounds_; }

  // State to persist: the round count, then the RDP of every order.
  std::vector<double> ExportState() const;
  void ImportState(std::span<const double> state);

 private:
  std::size_t Best(double delta) const;
  std::vector<double> rdp_;  // accumulated, one per order
  std::uint64_t rounds_ = 0;
};

}  // namespace fedsgd
