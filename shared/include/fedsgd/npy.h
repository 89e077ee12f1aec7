// NumPy .npy files of one float32 vector: the form in which the coordinator
// serves a model (`/v1/model?format=npy`) and a daemon keeps its newest one
// (daemon/saved_model.h), so `numpy.load` reads both.
//
// EncodeNpy writes format 1.0, '<f4', C order, shape (n,), the header padded
// to a multiple of 64 bytes as numpy does. DecodeNpy reads what numpy writes
// for such an array: format 1.0 to 3.0, descr '<f4' (or '=f4' / 'f4' on a
// little-endian host), fortran_order False, shape (n,) or (1, n) or (n, 1),
// and exactly n x 4 data bytes; anything else throws fedsgd::Error naming
// `what` and the problem (a wrong dtype, a 2-D shape, a truncated file).
// Reentrant; the decoded vector is the only allocation.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fedsgd {

std::string EncodeNpy(std::span<const float> values);
std::vector<float> DecodeNpy(std::string_view bytes, const std::string& what);

}  // namespace fedsgd
