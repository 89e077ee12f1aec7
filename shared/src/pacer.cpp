// Pacer (see fedsgd/pacer.h).
#include "fedsgd/pacer.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace fedsgd {

void Pacer::After(double seconds) const {
  if (!active() || !(seconds > 0)) return;
  using Clock = std::chrono::steady_clock;
  const auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>((slowdown_ - 1) * seconds));
  for (auto now = Clock::now(); now < until; now = Clock::now()) {
    if (stop_ && stop_->load(std::memory_order_relaxed)) return;
    std::this_thread::sleep_for(
        std::min<Clock::duration>(until - now, std::chrono::milliseconds(20)));
  }
}

}  // namespace fedsgd
