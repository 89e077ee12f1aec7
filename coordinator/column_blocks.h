// ForEachColumn: visits each coordinate j of the buffered updates with its n
// values gathered in a small contiguous array (the column), which the
// visitor may reorder. Rows are read in blocks of kBlock coordinates, so the
// transposition reads memory sequentially and the columns stay in cache.
//
// Memory: kBlock x n floats of scratch. Called from the round thread only.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "update_buffer.h"

namespace fedsgd {

template <typename Visit>
void ForEachColumn(const UpdateBuffer& buffer, Visit&& visit) {
  constexpr std::size_t kBlock = 256;
  const std::size_t n = buffer.count();
  const std::size_t p = buffer.size();
  std::vector<float> block(kBlock * n);
  for (std::size_t j0 = 0; j0 < p; j0 += kBlock) {
    const std::size_t width = std::min(kBlock, p - j0);
    for (std::size_t i = 0; i < n; ++i) {
      const float* row = buffer.row(i).data() + j0;
      for (std::size_t j = 0; j < width; ++j) block[j * n + i] = row[j];
    }
    for (std::size_t j = 0; j < width; ++j) visit(j0 + j, block.data() + j * n);
  }
}

}  // namespace fedsgd
