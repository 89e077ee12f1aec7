// ServerState: what the coordinator carries from one round to the next
// besides the weights (server optimiser moments, the norm bound's history,
// a DP accountant...), as named flat vectors of doubles.
//
// Each component owns one name ("server_optimizer", "norm_bound", ...) and
// reads / writes only its own entry. CheckpointStore::CommitRound stores the
// whole state in the same SQLite transaction as the round's weights, and
// StartRun returns it on resume, so a restarted coordinator continues
// bit-exactly. Memory: the sum of the entries (adam / yogi: 2 x P doubles).
//
// A plain value: copy it, no locking of its own.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace fedsgd {

using ServerState = std::map<std::string, std::vector<double>>;

}  // namespace fedsgd
