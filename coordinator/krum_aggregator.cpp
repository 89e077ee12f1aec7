// Krum and multi-Krum (see krum_aggregator.h).
#include "krum_aggregator.h"

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <numeric>

#include "median_aggregator.h"

namespace fedsgd {

void KrumAggregator::Finish(std::span<float> out) {
  const std::size_t n = buffer_.count();
  const std::size_t p = buffer_.size();
  assert(n > 0 && out.size() == p);
  stats_ = AggregationStats{};
  stats_.rule = name();
  stats_.updates = n;
  selected_.clear();
  const auto f = static_cast<std::size_t>(byzantine_);
  if (n <= 2 * f + 2) {
    CoordinateMedian(buffer_, out);
    stats_.note = name() + " needs more than 2f + 2 = " + std::to_string(2 * f + 2) +
                  " updates, got " + std::to_string(n) + ": used the coordinate-wise median";
    return;
  }
  using Rows =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;
  const Rows x(buffer_.data(), static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(p));
  Eigen::MatrixXd distance =
      Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(n));
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index j = i + 1; j < x.rows(); ++j) {
      const double d = (x.row(i) - x.row(j)).cast<double>().squaredNorm();
      distance(i, j) = d;
      distance(j, i) = d;
    }
  }
  // Score: the sum of the n - f - 2 smallest distances to the others.
  const std::size_t neighbours = n - f - 2;
  std::vector<double> score(n), others;
  for (std::size_t i = 0; i < n; ++i) {
    others.clear();
    for (std::size_t j = 0; j < n; ++j) {
      if (j != i)
        others.push_back(distance(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)));
    }
    std::partial_sort(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(neighbours),
                      others.end());
    score[i] = std::accumulate(others.begin(),
                               others.begin() + static_cast<std::ptrdiff_t>(neighbours), 0.0);
  }
  std::size_t m = select_ > 0 ? static_cast<std::size_t>(select_) : n - f;
  m = std::min(m, n);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return score[a] < score[b]; });
  selected_.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m));
  std::sort(selected_.begin(), selected_.end());
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(static_cast<Eigen::Index>(p));
  for (std::size_t i : selected_)
    sum += x.row(static_cast<Eigen::Index>(i)).transpose().cast<double>();
  sum /= static_cast<double>(m);
  for (std::size_t j = 0; j < p; ++j)
    out[j] = static_cast<float>(sum(static_cast<Eigen::Index>(j)));
  stats_.excluded = n - m;
}

}  // namespace fedsgd
