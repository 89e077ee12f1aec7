// SGD with momentum, L2 weight decay and L1, and learning-rate schedules.
//
// One step, for every parameter w with gradient g and velocity v:
//   g' = g + weight_decay * w + l1 * sign(w)
//   v  = momentum * v + g'        (skipped when momentum == 0)
//   w  = w - lr * (momentum ? v : g')
//
// Two kernels do this: SgdStep for memory one thread owns (vectorised), and
// SgdStepShared for weights that several hogwild threads update at once:
// every access goes through std::atomic_ref<float> with relaxed order, so
// concurrent updates may overwrite one another (as hogwild allows) but there
// is no data race in the C++ sense and ThreadSanitizer stays quiet.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fedsgd {

// Learning rate as a function of the step count t (mini-batches so far):
//   constant           lr
//   step:S:G           lr * G^floor(t / S)
//   exp:G              lr * G^t
//   inv:G[:P]          lr / (1 + G * t)^P   (P defaults to 1)
struct LrSchedule {
  enum class Kind { kConstant, kStep, kExponential, kInverseTime };
  Kind kind = Kind::kConstant;
  double gamma = 1.0;
  long step_size = 1;
  double power = 1.0;

  // Throws fedsgd::Error for anything else.
  static LrSchedule Parse(std::string_view text);
  std::string ToString() const;
  double Rate(double base_lr, long step) const;
};

struct SgdOptions {
  float lr = 0.05f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;  // L2
  float l1 = 0.0f;
  LrSchedule schedule;
};

// w, g, v have n floats; v may be null when momentum == 0.
void SgdStep(float* w, const float* g, float* v, std::size_t n, float lr,
             const SgdOptions& options);
// The same update on weights shared between threads (see above). v is
// shared too when not null.
void SgdStepShared(float* w, const float* g, float* v, std::size_t n, float lr,
                   const SgdOptions& options);
// Copies shared weights into a private buffer with relaxed atomic loads.
// (Non-const because std::atomic_ref needs a mutable object.)
void LoadShared(float* shared, float* out, std::size_t n);

}  // namespace fedsgd
