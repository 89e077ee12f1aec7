// The receive path's fast reader of an Update header (issue 11: no
// allocation per update). Private to wire.cpp (Decode).
//
// Decode's general path parses a header into a json value (about thirty
// small allocations) and reads it field by field (header_reader.h). An
// Update as Encode writes it is a flat CBOR map of known scalar fields, so
// ReadPlainUpdate reads that form straight from the bytes into an Update,
// allocating nothing (a device id over 15 characters aside: std::string's
// small-string buffer). It only ever accepts: anything it does not know
// exactly (another key, a repeated key, a nested or indefinite-length item,
// a half float, a negative integer, a value out of range, trailing bytes)
// makes it return false, and Decode's general path then decides, with the
// same checks and errors as always. So for every header it accepts, the
// general path would produce the same Update (wire_test checks both on the
// same bytes).
//
// Thread-safety: a pure function. Never reads outside `header`.
#pragma once

#include <cstddef>
#include <span>

#include "fedsgd/wire.h"

namespace fedsgd::wire::update_header {

// True with `out` filled (payload and encoded left as they were) when
// `header` is a plain fp32 Update header that the general path would accept:
// v, kind "update", device, round, model_version, samples (>= 1), loss,
// update_kind (delta | gradient), train_seconds (>= 0), optionally
// eval_loss, eval_accuracy and eval_samples together, and no "encoding".
// False otherwise, with `out` in an unspecified state.
bool ReadPlainUpdate(std::span<const unsigned char> header, Update& out);

}  // namespace fedsgd::wire::update_header
