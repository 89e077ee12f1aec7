// Pacer: makes training take `slowdown` times as long as it does, to
// simulate a slow board (a straggler) on a fast machine: a simulation aid,
// set by `fedsgd-daemon --slowdown F`, never needed on a real board.
//
// After each piece of work (a mini-batch) that took t seconds, After(t)
// sleeps (slowdown - 1) x t, so the work really takes slowdown x t of wall
// time while the CPU is free for others, as on a board that is slower.
// The sleep is cut into slices of at most 20 ms and ends early once *stop
// is true, so a cancelled job still ends within a mini-batch.
//
// Thread-safety: After() may be called from many threads at once (each
// sleeps for its own work). Costs nothing when slowdown is 1.
#pragma once

#include <atomic>

namespace fedsgd {

class Pacer {
 public:
  // slowdown >= 1 (1 = off); stop may be null.
  explicit Pacer(double slowdown = 1, const std::atomic<bool>* stop = nullptr)
      : slowdown_(slowdown), stop_(stop) {}

  bool active() const { return slowdown_ > 1; }
  void After(double seconds) const;

 private:
  double slowdown_;
  const std::atomic<bool>* stop_;
};

}  // namespace fedsgd
