// Evaluate (see network.h): a model scored over a whole data set, its
// batches shared out among threads.
#include <algorithm>
#include <thread>
#include <vector>

#include "fedsgd/dataset_view.h"
#include "fedsgd/network.h"

namespace fedsgd {

Evaluation Evaluate(const Architecture& arch, const float* params, const DatasetView& data,
                    int threads) {
  const int batch = InferenceBatch(arch);
  const std::size_t n = data.size();
  Evaluation result;
  result.samples = n;
  if (n == 0) return result;
  const std::size_t batches = (n + batch - 1) / batch;
  threads = static_cast<int>(std::clamp<std::size_t>(threads, 1, batches));
  std::vector<BatchScore> partial(threads);
  auto work = [&](int t) {
    Workspace ws(arch, batch);
    // Each batch is gathered (and byte features converted) into floats.
    std::vector<float> x(static_cast<std::size_t>(batch) * data.num_features()), y(batch);
    for (std::size_t b = t; b < batches; b += threads) {
      const std::size_t begin = b * batch;
      const int rows = static_cast<int>(std::min<std::size_t>(batch, n - begin));
      data.Copy(begin, static_cast<std::size_t>(rows), x.data(), y.data());
      const BatchScore s = Score(arch, params, x.data(), y.data(), rows, ws);
      partial[t].loss_sum += s.loss_sum;
      partial[t].correct += s.correct;
    }
  };
  {
    std::vector<std::jthread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
    work(0);
  }
  double loss = 0;
  std::size_t correct = 0;
  for (const BatchScore& s : partial) {
    loss += s.loss_sum;
    correct += s.correct;
  }
  result.loss = loss / static_cast<double>(n);
  result.accuracy =
      arch.num_classes() > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  return result;
}

}  // namespace fedsgd
