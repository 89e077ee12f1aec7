// The last check before a new global model is committed: every parameter
// must be finite. Each update is checked on arrival, but their aggregate can
// still overflow (a finite 3e38 per weight times a large sample count), and
// a committed Inf model would be resumed after every restart: a permanent
// wedge. CoordinatorServer::CloseRound refuses such a round instead
// (docs/protocol.md, "Refused rounds").
//
// A pure function: any thread; no memory beyond the call.
#pragma once

#include <optional>
#include <span>
#include <string>

namespace fedsgd {

// nullopt when every value is finite; otherwise what is wrong, for the log
// ("12 of 15 parameters are not finite, the first at index 0: inf").
std::optional<std::string> FindNonFinite(std::span<const float> params);

}  // namespace fedsgd
