// UpdateBuffer: the round's updates kept side by side (n x P floats, one
// contiguous row per update) for the rules that need all of them at once
// (median, trimmed mean, Krum, and the first round of adaptive norm
// bounding, which has no earlier norms to clip against).
//
// Memory: n x P x 4 bytes, never more than the budget given to Reset: full()
// turns true when one more row would not fit, and Add must not be called
// then (the round logic closes the round with what it has). Not thread-safe.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace fedsgd {

class UpdateBuffer {
 public:
  // Forgets the rows and sets the row size and the byte budget. Memory is
  // taken as rows arrive, not up front.
  void Reset(std::size_t size, double budget_bytes);
  void Add(std::span<const float> update, double weight);
  bool full() const { return count_ >= capacity_; }
  std::size_t count() const { return count_; }
  std::size_t size() const { return size_; }
  std::size_t capacity() const { return capacity_; }
  std::span<const float> row(std::size_t i) const { return {data_.data() + i * size_, size_}; }
  std::span<float> row(std::size_t i) { return {data_.data() + i * size_, size_}; }
  double weight(std::size_t i) const { return weights_[i]; }
  const float* data() const { return data_.data(); }

 private:
  std::vector<float> data_;
  std::vector<double> weights_;
  std::size_t size_ = 0;
  std::size_t count_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace fedsgd
