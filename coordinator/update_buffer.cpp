// UpdateBuffer (see update_buffer.h).
#include "update_buffer.h"

#include <algorithm>
#include <cassert>

namespace fedsgd {

void UpdateBuffer::Reset(std::size_t size, double budget_bytes) {
  size_ = size;
  count_ = 0;
  data_.clear();
  weights_.clear();
  const double row_bytes = static_cast<double>(std::max<std::size_t>(size, 1) * sizeof(float));
  capacity_ = static_cast<std::size_t>(std::max(0.0, budget_bytes / row_bytes));
}

void UpdateBuffer::Add(std::span<const float> update, double weight) {
  assert(update.size() == size_ && !full());
  data_.insert(data_.end(), update.begin(), update.end());
  weights_.push_back(weight);
  ++count_;
}

}  // namespace fedsgd
