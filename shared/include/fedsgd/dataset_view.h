// DatasetView: some of a Dataset's samples, picked by index, without
// copying them.
//
// A device trains on one part of its shard and scores the global model on
// another (holdout.h); views let both parts share the shard's one copy of
// the features. A Dataset converts implicitly to a view of all its samples,
// so a function that takes a view takes a whole data set as well.
//
// A view is two pointers and a length: the Dataset and the index array must
// outlive it. It allocates nothing; const use from many threads is safe.
#pragma once

#include <cstddef>
#include <span>

#include "fedsgd/dataset.h"

namespace fedsgd {

class DatasetView {
 public:
  // All of data's samples, in order.
  DatasetView(const Dataset& data) : data_(&data) {}  // NOLINT(google-explicit-constructor)
  // Samples rows[0..k) of data; every index must be below data.size().
  DatasetView(const Dataset& data, std::span<const std::size_t> rows)
      : data_(&data), rows_(rows), all_(false) {}

  const Dataset& data() const { return *data_; }
  std::size_t size() const { return all_ ? data_->size() : rows_.size(); }
  int num_features() const { return data_->num_features; }
  int num_classes() const { return data_->num_classes; }
  // The index in data() of the view's sample i.
  std::size_t row(std::size_t i) const { return all_ ? i : rows_[i]; }
  float target(std::size_t i) const { return data_->y[row(i)]; }

  // The view's samples [begin, begin + count) as floats into x (count *
  // num_features, sample-major) and their targets into y (Dataset::Gather).
  void Copy(std::size_t begin, std::size_t count, float* x, float* y) const {
    if (!all_) return data_->Gather(rows_.subspan(begin, count), x, y);
    const auto d = static_cast<std::size_t>(data_->num_features);
    for (std::size_t i = 0; i < count; ++i) {
      data_->CopyFeatures(begin + i, x + i * d);
      y[i] = data_->y[begin + i];
    }
  }

 private:
  const Dataset* data_;
  std::span<const std::size_t> rows_;
  bool all_ = true;
};

}  // namespace fedsgd
