// A pretrained start: the weights a new run's round 0 takes instead of the
// seeded He/Glorot initialisation (the coordinator's --initial-model).
//
// A source is one of
//   FILE.npy        a float32 vector as /v1/model?format=npy serves it (and
//                   numpy.save writes it; see fedsgd/npy.h);
//   DB              the newest committed round of the newest run of another
//                   coordinator's SQLite database;
//   DB:ROUND        that round (0 = its initial model) of the newest run;
//   DB:RUN:ROUND    that round of that run.
// A file that exists under the whole name is taken as it is, so a path with
// a colon needs no escape. The weights must fit `arch`: the same parameter
// layout (a database's run must also have the same model, dropout aside),
// every value finite. Reentrant.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "fedsgd/model.h"

namespace fedsgd {

struct InitialModel {
  std::vector<float> params;
  std::string source;  // as given
  std::string sha256;  // of the float32 bytes, lowercase hex
};

// Throws fedsgd::Error naming the source and what is wrong: an unreadable
// or unknown file, a missing run or round, another architecture, a size
// other than arch.ParameterCount(), a non-finite value.
InitialModel LoadInitialModel(const std::string& source, const Architecture& arch);

// SHA-256 (OpenSSL) of the values' bytes, lowercase hex.
std::string Sha256Hex(std::span<const float> values);

}  // namespace fedsgd
